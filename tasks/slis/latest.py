"""What a scrape serves: the SLIs of each flow's latest computation, one small file a
flow (`slis_latest/flow=<flow>.parquet`), replaced by every run that computes them.

The `slis` history only grows, so a scrape that read it would cost more every run
(and on S3, a listing and a GET per file); and a series a run stopped producing (a
labeling function removed, a drift check that no longer applies) would be exported
forever at its last value. The latest file of each flow is what that flow now says:
a scrape lists one folder of a few files and reads them whatever the history's length.

The history stays the record (append-only, as every dataset); these files are derived
from it and rebuilt from it when missing (a store written before they existed).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tasks.store import SCHEMAS, SLIS, SLIS_LATEST, Store, StoreError

log = logging.getLogger(__name__)

LATEST = SLIS_LATEST


def _folder(store: Store) -> str:
    return f"{store.base}/{LATEST}"


def _path(store: Store, flow: str) -> str:
    return f"{_folder(store)}/flow={quote(flow, safe='')}.parquet"


def _files(store: Store) -> list[str]:
    sel = pafs.FileSelector(_folder(store), allow_not_found=True)
    return sorted(
        i.path
        for i in store.fs.get_file_info(sel)
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and not i.base_name.startswith((".", "_"))  # a writer's temporary file
    )


def _newest(table: pa.Table) -> object:
    return pc.max(table.column("computed_at")).as_py() if table.num_rows else None


def write_latest(store: Store, flow: str, rows: pa.Table) -> None:
    """Make `rows` (one computation of `flow`, in the `slis` schema) the flow's latest,
    unless a newer computation of the flow is there already (runs finish out of order)."""
    if not _files(store) and store.files(SLIS):
        rebuild_latest(store)  # the other flows' latest, from before these files existed
    path = _path(store, flow)
    if store.fs.get_file_info(path).type == pafs.FileType.File:
        theirs = _newest(pq.read_table(path, columns=["computed_at"], filesystem=store.fs))
        ours = _newest(rows)
        if theirs is not None and ours is not None and theirs > ours:
            return
    store.write_file(path, rows.select(SCHEMAS[SLIS].names).cast(SCHEMAS[SLIS]))


def rebuild_latest(store: Store) -> pa.Table:
    """Derive every flow's latest file from the history (each flow's newest run); the
    rows. Writing is best effort: a read-only exporter still serves them."""
    history = store.read(SLIS, SCHEMAS[SLIS].names)
    parts: list[pa.Table] = []
    for flow in pc.unique(history.column("flow")).to_pylist():
        ran = history.filter(pc.field("flow") == flow)
        # one computation's rows share its time
        rows = ran.filter(
            pc.field("computed_at") == pa.scalar(_newest(ran), ran.schema.field("computed_at").type)
        )
        parts.append(rows)
        try:
            store.write_file(_path(store, flow), rows)
        except (OSError, StoreError) as exc:
            log.warning("could not write the latest SLIs of %s to %s: %s", flow, store, exc)
    return pa.concat_tables(parts) if parts else SCHEMAS[SLIS].empty_table()


def read_latest(store: Store) -> pa.Table:
    """Every flow's latest SLI rows (the `slis` schema)."""
    files = _files(store)
    if not files:
        return rebuild_latest(store) if store.files(SLIS) else SCHEMAS[SLIS].empty_table()
    return pa.concat_tables(
        pq.read_table(f, filesystem=store.fs).select(SCHEMAS[SLIS].names).cast(SCHEMAS[SLIS])
        for f in files
    )
