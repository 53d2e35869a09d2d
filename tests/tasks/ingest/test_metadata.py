"""A manifest's metadata columns: stored with each example, or a clear error; and the
gate's slices may name them."""

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from configs.schema import ConfigError, load_config
from tasks.ingest import DataContractError, image_folder_records, ingest_records, open_source
from tasks.store import EXAMPLES, Store, content_id
from tests.conftest import png, write


def _ingest_manifest(store_root: str, manifest: Path, metadata_columns: list[str]):
    cfg = load_config(
        overrides={
            "store.root": store_root,
            "ingest.workers": 1,
            "source.kind": "manifest",
            "source.path": str(manifest),
            "source.metadata_columns": metadata_columns,
        }
    )
    name, total, records = open_source(cfg.data_spec(), cfg.source)
    spec = cfg.data_spec()
    return ingest_records(
        Store(store_root), records, spec, cfg.ingest, source_name=name, run_id="run-1", total=total
    )


def _stored_metadata(store_root: str) -> dict[str, dict[str, str] | None]:
    rows = Store(store_root).read(EXAMPLES, ["example_id", "metadata"]).to_pylist()
    return {r["example_id"]: None if r["metadata"] is None else dict(r["metadata"]) for r in rows}


def test_csv_manifest_metadata_is_stored_with_each_example_first_copy_wins(
    store_root: str, tmp_path: Path
):
    for name, seed in [("a", 1), ("b", 2), ("c", 3), ("a_again", 1)]:
        write(tmp_path / "img" / f"{name}.png", png(seed))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,region,camera\n"
        "img/a.png,1,north,cam-1\n"
        "img/b.png,,south,\n"  # an empty camera is left out
        "img/c.png,2,  ,\n"  # nothing at all: null
        "img/a_again.png,1,west,cam-9\n"  # the same bytes again: the first row's metadata
    )

    summary = _ingest_manifest(store_root, manifest, ["region", "camera"])

    assert (summary.seen, summary.ingested, summary.duplicates) == (4, 3, 1)
    assert _stored_metadata(store_root) == {
        content_id(png(1)): {"region": "north", "camera": "cam-1"},
        content_id(png(2)): {"region": "south"},
        content_id(png(3)): None,
    }


def test_parquet_manifest_metadata_is_stored_as_text(store_root: str, tmp_path: Path):
    write(tmp_path / "img/a.png", png(1))
    write(tmp_path / "img/b.png", png(2))
    manifest = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"path": ["img/a.png", "img/b.png"], "site": pa.array([7, None], pa.int64())}),
        manifest,
    )

    _ingest_manifest(store_root, manifest, ["site"])

    assert _stored_metadata(store_root) == {
        content_id(png(1)): {"site": "7"},
        content_id(png(2)): None,
    }


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_metadata_column_missing_from_the_manifest_fails_the_ingest_naming_it(
    store_root: str, tmp_path: Path, suffix: str
):
    write(tmp_path / "img/a.png", png(1))
    manifest = tmp_path / f"m{suffix}"
    table = pa.table({"path": ["img/a.png"], "label": ["1"], "region": ["north"]})
    (pacsv.write_csv if suffix == ".csv" else pq.write_table)(table, manifest)

    with pytest.raises(DataContractError) as err:
        _ingest_manifest(store_root, manifest, ["region", "camera"])

    msg = str(err.value)
    assert "'camera'" in msg and "source.metadata_columns" in msg and str(manifest) in msg
    assert "['path', 'label', 'region']" in msg  # what the manifest has
    assert Store(store_root).count(EXAMPLES) == 0


def test_a_source_without_metadata_stores_null(store_root: str, tmp_path: Path):
    write(tmp_path / "images/1/a.png", png(1))
    cfg = load_config(overrides={"store.root": store_root, "ingest.workers": 1})
    total, records = image_folder_records(tmp_path / "images")
    spec = cfg.data_spec()
    ingest_records(
        Store(store_root), records, spec, cfg.ingest, source_name="f", run_id="r", total=total
    )
    assert _stored_metadata(store_root) == {content_id(png(1)): None}


# -- the config: gate.slices may name a metadata column, and nothing else unknown ----------


def test_gate_slices_must_be_built_in_or_a_metadata_column():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"gate.slices": ["nope"]})
    msg = str(err.value)
    assert "gate.slices" in msg and "'nope'" in msg and "source, ingest_date" in msg

    cfg = load_config(
        overrides={"source.metadata_columns": ["region"], "gate.slices": ["region", "source"]}
    )
    assert cfg.gate.slices == ("region", "source")
    with pytest.raises(ConfigError, match=r"gate.slices.*'region'"):
        load_config(overrides={"gate.slices": ["region"]})  # not a metadata column


def test_metadata_columns_may_not_repeat_or_hide_a_built_in_slice():
    with pytest.raises(ConfigError, match=r"duplicates: \['a'\].*\['source'\] would hide"):
        load_config(overrides={"source.metadata_columns": ["a", "source", "a"]})
