"""The lineage of a registered version, on a real store and a real MLflow (SQLite) store:
which data (people apart from the data's own labels, the split, the instant it was read)
and which settings (those that differ from the champion's)."""

from datetime import datetime
from pathlib import Path

import pytest

from configs.schema import Config, load_config
from flows.cli import main
from flows.train import training_inputs
from tasks.annotation.delivery import import_file
from tasks.registry.aliases import TAG_GATE, RegistryRef, promote, register_candidate
from tasks.registry.lineage import Lineage, TrainingSplit, lineage, snapshot_lineage
from tasks.store import EXAMPLES, LABELS, GoldSplit, Store
from tasks.training import train_and_log
from tasks.training.data import load_training_data
from tests.conftest import digit_folder, ingest_configured_source, tiny_run_overrides

ALICE = "alice@example.com"


@pytest.fixture
def overrides(tmp_path: Path) -> dict:
    folder = digit_folder(tmp_path / "images", n=240, n_labeled=150)
    return {
        **tiny_run_overrides(tmp_path, folder, f"sqlite:///{tmp_path / 'mlflow.db'}"),
        "train.teacher_steps": 10,
        "train.student_steps": 10,
        "train.eval_every": 10,
    }


def unlabeled_training_examples(store: Store, cfg: Config, n: int) -> list[str]:
    """`n` examples that are neither labeled nor gold: a person's answer on one of them
    reaches the training snapshot."""
    labeled = store.column_set(LABELS, "example_id")
    ids = [e for e in store.column_set(EXAMPLES, "example_id") if e not in labeled]
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    free = [e for e, part in zip(sorted(ids), split.parts(sorted(ids)), strict=True) if not part]
    assert len(free) >= n
    return free[:n]


def answer(store: Store, cfg: Config, folder: Path, who: str, examples: list[str]) -> None:
    """`who` answers about `examples` in a CSV, imported as `semilabel annotate import`."""
    path = folder / f"answers-{who}.csv"
    path.write_text("example_id,label,annotator\n" + "".join(f"{e},1,{who}\n" for e in examples))
    done = import_file(store, cfg.taxonomy, path, run_id=f"import-{who}")
    assert done.events_written == len(examples)


@pytest.fixture
def annotated(overrides: dict, tmp_path: Path) -> tuple[Config, Store]:
    """A store whose labels came with an image folder, and from alice's CSV answers."""
    cfg = load_config(overrides=overrides)
    store = Store(cfg.store.root)
    ingest_configured_source(cfg, run_id="ingest")
    answer(store, cfg, tmp_path, ALICE, unlabeled_training_examples(store, cfg, 8))
    return cfg, store


def snapshot_of(store: Store, cfg: Config) -> str:
    """The training snapshot `semilabel train` would record for `cfg` now."""
    data = load_training_data(store, cfg.data_spec(), cfg.train, cfg.labels)
    return store.write_snapshot(
        data.train_ids, data.label_event_ids, purpose="train", run_id="test"
    )


def test_people_are_annotators_and_labels_that_came_with_the_data_are_a_source(annotated):
    cfg, store = annotated
    trace = snapshot_lineage(store, snapshot_of(store, cfg))
    assert trace.annotators == {ALICE: 8}
    # the image folder's class folders are a source of labels, not a person
    folder_labels = trace.by_source["image_folder:images"]
    assert trace.label_sources == {"image_folder:images": folder_labels}
    assert folder_labels > 0 and trace.label_events == {"human": folder_labels + 8}


def test_the_snapshot_time_rebuilds_the_snapshot_after_later_labels(annotated, overrides, tmp_path):
    cfg, store = annotated
    snapshot = snapshot_of(store, cfg)
    taken = snapshot_lineage(store, snapshot).taken_at
    assert datetime.fromisoformat(taken).tzinfo is not None
    # a later answer changes what training reads now...
    bob = unlabeled_training_examples(store, cfg, 3)
    answer(store, cfg, tmp_path, "bob", bob)
    assert snapshot_of(store, cfg) != snapshot
    # ...and the printed instant, as `--as-of` takes it, reads the store as it was then
    then = load_config(overrides={**overrides, "train.as_of": taken})
    assert snapshot_of(store, then) == snapshot


def register(ref: RegistryRef, trained, gate: str, champion_at_gate: str) -> str:
    """Register a trained run as `semilabel retrain` does (the tags lineage reads)."""
    return register_candidate(
        ref,
        trained.model_uri,
        trained.mlflow_run_id,
        {
            TAG_GATE: gate,
            "semilabel.snapshot_id": trained.snapshot_id,
            "semilabel.gold_snapshot_id": "gold",
            "semilabel.code_version": "test",
            "semilabel.champion_at_gate": champion_at_gate,
        },
    )


def changes(trace: Lineage) -> dict[str, tuple[str, str]]:
    return {c.setting: (c.this, c.other) for c in trace.settings.changes}


@pytest.mark.slow
def test_a_version_names_the_settings_that_differ_from_the_champions(annotated, overrides, capsys):
    cfg, store = annotated
    uri = cfg.mlflow.tracking_uri
    ref = RegistryRef(uri, "traced")
    first, _ = train_and_log(training_inputs(cfg))
    v1 = register(ref, first, "passed", "none")
    promote(ref, v1, expected_champion=None)
    alone = lineage(f"models:/traced/{v1}", uri, store).settings
    assert alone.other_version is None and "the champion and replaced none" in alone.note
    faster, _ = train_and_log(
        training_inputs(load_config(overrides={**overrides, "train.lr": 0.01}))
    )
    v2 = register(ref, faster, "passed", v1)
    promote(ref, v2, expected_champion=v1)
    shuffled, _ = train_and_log(
        training_inputs(load_config(overrides={**overrides, "train.shuffle_labels": True}))
    )
    v3 = register(ref, shuffled, "rejected", v2)
    lr = str(cfg.train.lr)

    # the sabotaged version: the same data as the others, and the setting that differs
    trace = lineage(f"models:/traced/{v3}", uri, store)
    assert trace.settings.other_version == v2 and trace.settings.other_role == "the champion"
    assert changes(trace) == {"train.shuffle_labels": ("True", "False"), "train.lr": (lr, "0.01")}
    # the champion: compared with the one it replaced
    champ = lineage("models:/traced@champion", uri, store)
    assert champ.version == v2 and champ.settings.other_version == v1
    assert champ.settings.other_role == "the champion it replaced"
    assert changes(champ) == {"train.lr": ("0.01", lr)}
    # the first champion replaced none; now the champion is another version
    assert changes(lineage(f"models:/traced/{v1}", uri, store)) == {"train.lr": (lr, "0.01")}

    # the split the training run logged, and the instant its data was read
    assert trace.split == TrainingSplit(
        human=shuffled.n_human,
        weak=shuffled.n_weak,
        unlabeled=shuffled.n_unlabeled,
        gold_dev=shuffled.n_gold_dev,
    )
    assert trace.as_of == trace.training.taken_at
    assert trace.training.annotators == {ALICE: 8}

    # as a person reads it
    assert main(["lineage", f"models:/traced/{v3}", "--set", f"store.root={cfg.store.root}",
                 "--set", f"mlflow.tracking_uri={uri}"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    print(text)
    assert f"Settings that differ from v{v2}'s (the champion)" in text
    assert "| train.shuffle_labels | True | False |" in text
    assert (
        f"- split: {shuffled.n_human + shuffled.n_weak} labeled ({shuffled.n_human} human, "
        f"{shuffled.n_weak} weak), {shuffled.n_unlabeled} unlabeled" in text
    )
    assert f"Annotators (people): {ALICE} (8)." in text
    assert "Label sources (labels that came with the data): image_folder:images (" in text
    assert f"semilabel train --as-of {trace.as_of}" in text
    assert f"semilabel labels export --as-of {trace.as_of} --out" in text
    assert "Human annotators" not in text
