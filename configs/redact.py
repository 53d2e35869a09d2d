"""Config values as they may be shown: without credentials.

A store root such as `s3://KEY:SECRET@bucket/prefix`, a tracking URI such as
`postgresql://user:password@host/db` or a Pushgateway URL with `?token=...` is a
credential in a config value. Everything that logs or shows config (MLflow params,
tags, artifacts and descriptions, Prefect artifacts, log lines) passes it through
`redact` first: a URL's password becomes `***` (a user name alone, often a token, does
too), and so does the value of every `name=value` whose name says it is a secret
(token, password, secret, key, signature, credential, auth, session), in a query
string or anywhere else.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://authority...: up to whitespace or a character that ends a URL in prose/markup
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`|]+")
# a name=value whose name says it is a secret; the name is a whole word, not the tail of
# a dotted config key (`label_studio.token_env=LS_TOKEN` names a variable, no secret)
_SECRET_NAMES = (
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "key",
    "signature",
    "sig",
    "credential",
    "auth",
    "session",
)
_SECRET_PAIR = re.compile(
    r"(?<![\w.\-])([\w\-]*(?:" + "|".join(_SECRET_NAMES) + r")[\w\-]*)=([^\s&;#'\"]+)",
    re.IGNORECASE,
)


def _redact_userinfo(url: str) -> str:
    """`scheme://user:password@host...` -> `scheme://user:***@host...`; a lone user
    (`https://TOKEN@host`) -> `***`. A password may hold unencoded `/` (S3 secret keys
    do): then the authority runs to the `@` after the first `:`."""
    scheme, sep, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i != -1:
            end = min(end, i)
    authority = rest[:end]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        tail = rest[end:]
    else:
        colon, at = rest.find(":"), rest.find("@")
        port = rest[colon + 1 : end] if colon != -1 else ""
        if colon == -1 or at == -1 or colon > at or colon > end or port.isdigit():
            return url
        userinfo, host, tail = rest[:at], "", rest[at + 1 :]
    user, has_password, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if has_password and user else MASK
    return f"{scheme}{sep}{masked}@{host}{tail}"


def redact_text(text: str) -> str:
    """`text` with the credentials of every URL in it, and every secret-named value,
    replaced by `***`."""
    text = _URL.sub(lambda m: _redact_userinfo(m.group(0)), text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={MASK}", text)


def redact(value: Any) -> Any:
    """`value` (a string, or a dict/list/tuple of them as a config dumps to) with every
    credential replaced by `***`; other values unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def without_credentials(url: str) -> str:
    """A URL to link to: no user info at all (`***` in a link would be sent as the
    password), and secret-named query values masked."""
    masked = _redact_userinfo(url)
    if masked != url:
        scheme, sep, rest = masked.partition("://")
        masked = scheme + sep + rest.split(f"{MASK}@", 1)[1]
    return redact_text(masked)
