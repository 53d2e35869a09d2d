"""What the training tests share: an image folder ingested into a config's store."""

from pathlib import Path

from configs.schema import Config
from tasks.ingest import image_folder_records, ingest_records
from tasks.store import Store


def ingest_folder(cfg: Config, folder: Path, source_name: str, run_id: str = "r") -> None:
    """Ingest the image folder into `cfg`'s store, as `semilabel ingest` would."""
    total, records = image_folder_records(folder)
    store = Store(cfg.store.root)
    ingest_records(
        store,
        records,
        cfg.data_spec(),
        cfg.ingest,
        source_name=source_name,
        run_id=run_id,
        total=total,
    )
