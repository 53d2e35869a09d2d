"""A training process among several (`models/ranks.py`): alone, every operation is the
identity; on two gloo ranks, the pseudo-label state stays identical on both and equal to
one process seeing both ranks' batches."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.losses import DistributionAlignment
from models.ranks import Ranks, ShardedAlignment, ShardedThreshold
from models.thresholds import FlexMatchThreshold, FreeMatchThreshold, SoftMatchWeight


def test_one_process_is_rank_zero_of_one_and_shares_nothing():
    ranks = Ranks.current()
    assert ranks == Ranks(0, 1, 0) and ranks.is_main and not ranks.distributed
    t = torch.tensor([1.0, 2.0])
    assert ranks.gather(t) is t and ranks.sum(t) is t and torch.equal(ranks.mean(t), t)
    assert ranks.broadcast_int(7, torch.device("cpu")) == 7
    assert ranks.gather_objects({"a": 1}) == [{"a": 1}]
    # a sharded rule on one rank is the rule itself
    probs = torch.softmax(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)) * 4, 1)
    sharded = ShardedThreshold(FlexMatchThreshold(0.9, 4, 16, torch.device("cpu")), ranks)
    alone = FlexMatchThreshold(0.9, 4, 16, torch.device("cpu"))
    for rule in (sharded, alone):
        rule.select(probs, torch.arange(8))
    assert torch.equal(sharded.inner.predicted, alone.predicted)
    aligned = ShardedAlignment(DistributionAlignment(torch.ones(4), momentum=0.5), ranks)
    assert torch.allclose(aligned(probs), DistributionAlignment(torch.ones(4), 0.5)(probs))


def _rank_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ranks = Ranks.current()
        g = torch.Generator().manual_seed(rank)
        probs = torch.softmax(torch.randn(8, 4, generator=g) * 4, 1)
        idx = torch.arange(8) + 8 * rank  # each rank its own unlabeled examples
        thr = ShardedThreshold(FlexMatchThreshold(0.9, 4, 16, torch.device("cpu")), ranks)
        mask, pseudo = thr.select(probs, idx)
        align = ShardedAlignment(DistributionAlignment(torch.ones(4), momentum=0.5), ranks)
        align(probs)
        free = ShardedThreshold(FreeMatchThreshold(4, torch.device("cpu"), momentum=0.5), ranks)
        free_mask, _ = free.select(probs, idx)
        soft = ShardedThreshold(SoftMatchWeight(4, torch.device("cpu"), momentum=0.5), ranks)
        soft_weight, _ = soft.select(probs, idx)
        torch.save(
            {
                "free": free.state_dict(),
                "free_mask": free_mask,
                "soft": soft.state_dict(),
                "soft_weight": soft_weight,
                "predicted": thr.inner.predicted,
                "running": align.inner.running,
                "probs": probs,
                "idx": idx,
                "mask": mask,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_share_flexmatch_state_and_alignment_as_one_process_would(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # one process seeing both ranks' batches as one
    single = FlexMatchThreshold(0.9, 4, 16, torch.device("cpu"))
    both = torch.cat([r0["probs"], r1["probs"]])
    single.select(both, torch.cat([r0["idx"], r1["idx"]]))
    assert torch.equal(r0["predicted"], r1["predicted"])
    assert torch.equal(r0["predicted"], single.predicted)
    assert (single.predicted >= 0).sum() > 0  # some were confident, so this compared something
    # the mask used the thresholds from before the batch: in warm-up (all 16 unused) every
    # class's threshold is 0, so all 8 of a rank's examples were kept
    assert int(r0["mask"].sum()) == 8 and int(r1["mask"].sum()) == 8
    lone = DistributionAlignment(torch.ones(4), momentum=0.5)
    lone(both)
    assert torch.allclose(r0["running"], lone.running) and torch.equal(r0["running"], r1["running"])
    # FreeMatch and SoftMatch learn from all ranks' batch before masking, as one process
    free = FreeMatchThreshold(4, torch.device("cpu"), momentum=0.5)
    soft = SoftMatchWeight(4, torch.device("cpu"), momentum=0.5)
    free_mask, _ = free.select(both)
    soft_weight, _ = soft.select(both)
    for key, value in free.state_dict().items():
        assert torch.allclose(r0["free"][key], value) and torch.equal(
            r0["free"][key], r1["free"][key]
        )
    for key, value in soft.state_dict().items():
        assert torch.allclose(r0["soft"][key], value) and torch.equal(
            r0["soft"][key], r1["soft"][key]
        )
    assert torch.equal(torch.cat([r0["free_mask"], r1["free_mask"]]), free_mask)
    assert torch.allclose(torch.cat([r0["soft_weight"], r1["soft_weight"]]), soft_weight)
    assert float(free.global_threshold) != 0.25 and float(soft.mu) != 0.25  # they moved
