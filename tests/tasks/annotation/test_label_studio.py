"""The round trip against a real Label Studio: push requests as tasks, two annotators
answer through Label Studio's API (one correction, one skip, one tie), pull, check the
events and who they name; the tie goes back to Label Studio and a third answer settles
it."""

import pytest
from label_studio_sdk import LabelStudio as Client

from configs.schema import load_config
from flows.sample import sampling_inputs
from tasks.annotation.delivery import pull_answers, push_open
from tasks.sampling.run import sample_for_annotation
from tasks.store import LABELS, LatestLabels, Store

pytestmark = pytest.mark.slow


def _choice(label: str) -> list[dict]:
    return [
        {
            "from_name": "label",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def test_push_annotate_pull_round_trip(label_studio, store_cfg, monkeypatch):
    monkeypatch.setenv("SEMILABEL_TEST_LS_TOKEN", label_studio.token)
    cfg = load_config(
        overrides={
            "store.root": store_cfg.store.root,
            "taxonomy.classes": ["0", "1", "2"],
            "gold.fraction": 0.3,
            "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
            "sampling.budget.train": 0,
            "sampling.budget.gold": 4,
            "label_studio.url": label_studio.url,
            "label_studio.api_key_env": "SEMILABEL_TEST_LS_TOKEN",
            "label_studio.project": "semilabel round trip",
        }
    )
    store = Store(cfg.store.root)
    requests = sample_for_annotation(store, sampling_inputs(cfg), "sample-1").requests
    ls, taxonomy = cfg.label_studio, cfg.taxonomy
    assert len(requests) == 4

    pushed = push_open(store, ls, taxonomy)
    assert pushed.tasks == 4
    assert push_open(store, ls, taxonomy).tasks == 0  # pushed once: nothing twice

    client = Client(base_url=label_studio.url, api_key=label_studio.token)
    (project,) = [p for p in client.projects.list() if p.title == "semilabel round trip"]
    tasks = list(client.tasks.list(project=project.id))
    assert len(tasks) == 4
    by_example = {t.meta["example_id"]: t for t in tasks}
    assert set(by_example) == {r["example_id"] for r in requests}
    # the tasks carry the example, stream and request; gold has no pre-annotation
    assert {t.meta["stream"] for t in tasks} == {"gold"}

    me = client.users.whoami()
    other = client.users.create(username="bob", email="bob@semilabel.test", password="x" * 12)
    client.users.update(id=other.id, active_organization=me.active_organization)
    a, b, c, d = (by_example[r["example_id"]] for r in requests)
    client.annotations.create(id=a.id, result=_choice("0"), completed_by=me.id)
    client.annotations.create(id=a.id, result=_choice("0"), completed_by=other.id)
    client.annotations.create(id=b.id, result=_choice("1"), completed_by=me.id)
    client.annotations.create(id=b.id, result=_choice("2"), completed_by=other.id)  # a tie
    first_c = client.annotations.create(id=c.id, result=_choice("0"), completed_by=me.id)
    client.annotations.create(id=d.id, result=_choice("1"), was_cancelled=True, completed_by=me.id)

    summary = pull_answers(store, ls, taxonomy, "pull-1")
    assert (summary.answers, summary.events_written, summary.skipped) == (5, 5, 1)
    assert summary.agreement.examples == 2 and summary.agreement.ties == [b.meta["example_id"]]
    events = store.read(LABELS).to_pylist()
    ls_events = [e for e in events if e["source_name"].startswith("label_studio:")]
    # annotators by email, what people search for, not by Label Studio's user ids
    assert {e["source_name"] for e in ls_events} == {
        "label_studio:admin@semilabel.test",
        "label_studio:bob@semilabel.test",
    }
    assert summary.annotators == ["admin@semilabel.test", "bob@semilabel.test"]

    # a correction in Label Studio is a new event; pulling again adds nothing else
    client.annotations.update(id=first_c.id, result=_choice("1"))
    again = pull_answers(store, ls, taxonomy, "pull-2")
    assert (again.events_written, again.already_present) == (1, 4)
    latest = LatestLabels.read(store)
    human = latest.human(cfg.taxonomy.classes)
    assert human[a.meta["example_id"]][0] == "0"
    assert human[c.meta["example_id"]][0] == "1"  # the correction won
    assert b.meta["example_id"] in latest.unresolved  # the tie has no label...
    assert d.meta["example_id"] not in human  # skipped: no label

    # ...it goes back to Label Studio as a new task that shows the tie
    assert push_open(store, ls, taxonomy).tasks == 1  # the tie (d, skipped, is there already)
    assert push_open(store, ls, taxonomy).tasks == 0
    new = [t for t in client.tasks.list(project=project.id) if t.id not in {x.id for x in tasks}]
    (tie_task,) = [t for t in new if t.meta["example_id"] == b.meta["example_id"]]
    assert tie_task.data["tie"] == tie_task.meta["tie"] == "tied: 1 1, 2 1"
    assert not getattr(tie_task, "predictions", None)  # nothing to tip the balance
    client.annotations.create(id=tie_task.id, result=_choice("2"), completed_by=other.id)
    third = pull_answers(store, ls, taxonomy, "pull-3")
    assert (third.events_written, third.already_present) == (1, 5)
    latest = LatestLabels.read(store)
    assert latest.human(cfg.taxonomy.classes)[b.meta["example_id"]][0] == "2"
    assert b.meta["example_id"] not in latest.unresolved
