"""The next step of an undecided gate: the exact command, the pool's cap, an exhausted
pool, and an estimate on its limit."""

from tasks.validation import GatePolicy, Thresholds, decide


def _undecided(n: int, needed: int):
    """A gate report short of gold: `n` gold test labels, all right, against a minimum."""
    import numpy as np

    from tasks.validation import GoldEvidence

    y = np.zeros(n, dtype=np.int64)
    probs = np.tile([0.9, 0.1], (n, 1))
    policy = GatePolicy(needed, Thresholds(None, None, None), None, Thresholds(None, None, None))
    return decide(GoldEvidence(("0", "1"), y, probs), policy)


def test_an_undecided_gate_gives_the_exact_command_for_the_gold_it_needs():
    from tasks.validation.next_step import GoldPool, gold_to_request, next_step
    from tasks.validation.reports import gate_markdown

    report = _undecided(8, 200)  # 192 more gold test labels
    assert report.verdict == "undecided" and report.labels_needed == 192
    pool = GoldPool(fraction=0.2, test_share=0.5, unlabeled=1000, n_examples=5000)
    assert gold_to_request(report, pool) == 384  # half of gold lands in test
    step = next_step(report, pool)
    assert "About 192 more gold test labels would most likely decide it" in step
    assert (
        "`semilabel sample --set sampling.budget.gold=384 --set sampling.budget.train=0 "
        "--set sampling.mode=export`" in step
    )
    assert "semilabel annotate import --file <export>`, then `semilabel retrain`" in step
    assert step.endswith(".") and f"**Next step:** {step}" in gate_markdown(report, step)
    # A pool with fewer left asks for all of them, and says that will not be enough.
    short = next_step(report, GoldPool(0.2, 0.5, 100, 5000))
    assert "sampling.budget.gold=100 " in short and "it will not be enough" in short


def test_an_exhausted_gold_pool_says_so_and_what_else_would_decide():
    from tasks.validation.next_step import GoldPool, gold_to_request, next_step

    report = _undecided(100, 160)  # 60 more gold test labels needed
    pool = GoldPool(fraction=0.2, test_share=0.5, unlabeled=0, n_examples=1000)
    assert gold_to_request(report, pool) == 0
    step = next_step(report, pool)
    assert step.startswith(
        "About 60 more gold test labels would most likely decide it, but the gold pool is "
        "exhausted: every gold example already has a human label."
    )
    # 60 / (0.2 x 0.5) = 600 more images; or a gold fraction of 0.2 x 160 / 100 = 0.32,
    # which moves 1000 x 0.12 = 120 examples from training into gold.
    assert "about 600 more images give 60 gold test labels at gold.fraction 0.2" in step
    assert "raise gold.fraction from 0.2 to about 0.32 (`--set gold.fraction=0.32`)" in step
    assert "about 120 more examples become gold, leave training" in step


def test_an_estimate_on_its_limit_asks_for_a_better_model_not_for_endless_gold():
    import numpy as np

    from tasks.validation import GoldEvidence
    from tasks.validation.next_step import GoldPool, gold_to_request, next_step

    y = np.arange(100) % 2
    pred = y.copy()
    pred[:10] = 1 - y[:10]  # 90 of 100 right: exactly the floor
    probs = np.eye(2)[pred] * 0.8 + 0.1
    policy = GatePolicy(1, Thresholds(0.9, None, None), None, Thresholds(None, None, None))
    report = decide(GoldEvidence(("0", "1"), y, probs), policy)
    assert report.verdict == "undecided"
    pool = GoldPool(0.2, 0.5, 500, 5000)
    assert gold_to_request(report, pool) == 0
    step = next_step(report, pool)
    assert step.startswith("The estimate of accuracy_floor sits on its limit")
    assert "--set sampling.budget.train=200" in step


def test_the_printed_commands_repeat_the_runs_own_options():
    from tasks.validation.next_step import GoldPool, cli_args, next_step

    args = cli_args(
        "my config.yaml",
        {"source.path": "./photos", "taxonomy.classes": ["cat", "dog"], "sampling.mode": "off"},
    )
    assert args == (
        "--config 'my config.yaml' --set source.path=./photos "
        """--set 'taxonomy.classes=["cat", "dog"]'"""
    )
    step = next_step(_undecided(8, 200), GoldPool(0.2, 0.5, 1000, 5000), args)
    assert f"`semilabel sample {args} --set sampling.budget.gold=384 " in step
    assert f"`semilabel annotate import {args} --file <export>`" in step
    assert f"then `semilabel retrain {args}`" in step


def test_a_dry_pool_suggests_a_better_candidate_only_when_a_metric_is_undecided():
    import numpy as np

    from tasks.validation import GoldEvidence
    from tasks.validation.next_step import GoldPool, next_step

    dry = GoldPool(0.2, 0.5, 0, 1000)
    count_only = next_step(_undecided(100, 160), dry)
    assert "improve the candidate" not in count_only
    y = np.arange(50) % 2
    pred = y.copy()
    pred[:4] = 1 - y[:4]  # 46 of 50: bounds [0.826, 0.972] straddle the 0.9 floor
    policy = GatePolicy(1, Thresholds(0.9, None, None), None, Thresholds(None, None, None))
    report = decide(GoldEvidence(("0", "1"), y, np.eye(2)[pred] * 0.8 + 0.1), policy)
    step = next_step(report, dry, "--set source.path=./photos")
    assert "or improve the candidate, since one clearly above its floors is decided on far" in step
    assert "`semilabel sample --set source.path=./photos --set sampling.budget.train=200" in step
