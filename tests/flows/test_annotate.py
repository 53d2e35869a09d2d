"""The annotate flow as Prefect runs it: each action goes where it says, a wrong call is
refused with the fix, and answers read from a CSV land in the label log."""

import pytest

from flows.annotate import annotate
from tasks.store import EXAMPLES, LatestLabels, Store


def _overrides(cfg, tmp_path) -> dict:
    return {
        "store.root": cfg.store.root,
        "taxonomy.classes": list(cfg.taxonomy.classes),
        "gold.fraction": cfg.gold.fraction,
        "sampling.export_dir": str(tmp_path / "annotation"),
    }


def test_a_wrong_action_or_a_missing_file_is_refused_with_the_fix(prefect_api, store_cfg, tmp_path):
    ov = _overrides(store_cfg, tmp_path)
    with pytest.raises(ValueError, match="unknown action 'send'; choose one of export, import"):
        annotate(overrides=ov, action="send")
    with pytest.raises(ValueError, match="annotate import needs --file"):
        annotate(overrides=ov, action="import")


def test_export_with_nothing_open_says_what_to_run_first(prefect_api, store_cfg, tmp_path):
    delivery = annotate(overrides=_overrides(store_cfg, tmp_path), action="export")
    assert (delivery.mode, delivery.tasks) == ("export", 0)
    assert "run `semilabel sample` first" in delivery.where
    assert not (tmp_path / "annotation").exists()


def test_import_reads_a_csv_of_answers_into_the_label_log(prefect_api, store_cfg, tmp_path):
    store = Store(store_cfg.store.root)
    ids = store.read(EXAMPLES, columns=["example_id"]).column("example_id").to_pylist()
    unlabeled = [e for e in ids if e not in LatestLabels.read(store).human(["0", "1", "2"])][:4]
    answers = tmp_path / "answers.csv"
    answers.write_text("example_id,label,annotator\n" + "".join(f"{e},2,dana\n" for e in unlabeled))
    summary = annotate(
        overrides=_overrides(store_cfg, tmp_path), action="import", file=str(answers)
    )
    assert (summary.answers, summary.events_written, summary.annotators) == (4, 4, ["dana"])
    human = LatestLabels.read(store).human(["0", "1", "2"])
    assert [human[e][0] for e in unlabeled] == ["2"] * 4
