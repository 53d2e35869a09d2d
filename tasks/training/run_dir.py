"""A checkpoint folder per training run: never shared by two runs at once, found again
by a run that resumes.

A run's folder is `<train.run_dir>/train-<key>-<owner>`, where the key hashes the
settings and the data and the owner is the Prefect flow run id (a random id outside a
flow run). The run holds an exclusive lock on the folder (`flock` on `.claim`) while it
trains; the lock dies with the process. A run first claims the folder named after its
own flow run (a restarted flow run resumes its own checkpoint), then any other folder of
the same key whose owner is gone and which holds a checkpoint (a killed `semilabel
train` re-run with the same settings and data resumes there), and otherwise makes a new
one. Two runs with identical settings and data at the same time thus get two folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from models.train import CHECKPOINT

log = logging.getLogger(__name__)

CLAIM = ".claim"


def _try_claim(folder: Path) -> int | None:
    """An open, exclusively locked fd on `folder/.claim`, or None if another process
    holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / CLAIM, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def claim_run_dir(base: Path, key: str, owner: str | None) -> Iterator[Path]:
    """Claim a run folder for `key` (see the module docstring) for the body's duration.
    The folder is removed afterwards if the run left no checkpoint in it."""
    base.mkdir(parents=True, exist_ok=True)
    own = base / f"train-{key}-{owner or uuid.uuid4().hex[:12]}"
    others = sorted(p for p in base.glob(f"train-{key}-*") if p != own and p.is_dir())
    fd: int | None = None
    chosen = own
    if own.exists():
        fd = _try_claim(own)
        if fd is None:
            raise RuntimeError(
                f"run folder {own} is in use by another process of the same flow run"
            )
    else:
        for folder in others:
            if not (folder / CHECKPOINT).exists():
                continue
            fd = _try_claim(folder)
            if fd is not None:
                chosen = folder
                log.info("resuming the checkpoint a stopped run left in %s", folder)
                break
    if fd is None:
        fd = _try_claim(own)
        if fd is None:
            raise RuntimeError(
                f"run folder {own} was claimed by another process at the same moment; "
                "two runs share one flow run id?"
            )
    try:
        yield chosen
    finally:
        done = not (chosen / CHECKPOINT).exists()
        if done:
            shutil.rmtree(chosen, ignore_errors=True)
        os.close(fd)
