"""The model registry: everything that decides which model serves, and proves why.

- `aliases`: register every candidate, move `champion` by compare-and-set, keep the
  previous champion reachable, roll back (MLflow only).
- `lock`: the registry lock every alias writer holds (a Prefect global concurrency slot
  plus a lock file in the store), and the lease a writer checks before each alias write.
- `promotion`: candidate and champion on the same gold test snapshot, the gate, and the
  recorded decision.
- `monitoring`: the champion re-measured on today's gold, and the automatic rollback.
- `lineage`: which data, labels, people and settings made a registered version.
- `model_format`: how a classifier is logged, loaded and served (uint8 images in, class
  names and probabilities out).

Imported from here: the registry itself (references, aliases, the lock, lineage, the
model format). The stages that use it, `promotion` and `monitoring`, are imported by
their module path: they build on training and validation, which log models here.
"""

from tasks.registry.aliases import (
    CHAMPION,
    ChampionMoved,
    RegistryLeaseLost,
    RegistryRef,
    RegistryUnavailable,
    RollbackResult,
    champion_version,
)
from tasks.registry.lineage import Lineage, LineageError, lineage
from tasks.registry.lock import RegistryLease, registry_lock
from tasks.registry.model_format import ModelFormatError, load_classifier, log_classifier

__all__ = [
    "CHAMPION",
    "ChampionMoved",
    "Lineage",
    "LineageError",
    "ModelFormatError",
    "RegistryLease",
    "RegistryLeaseLost",
    "RegistryRef",
    "RegistryUnavailable",
    "RollbackResult",
    "champion_version",
    "lineage",
    "load_classifier",
    "log_classifier",
    "registry_lock",
]
