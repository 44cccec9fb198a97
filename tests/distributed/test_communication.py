"""The collectives of vllm.distributed on real processes (2 and 4, spawned,
gloo over localhost), each result checked inside every rank against its
definition computed from all ranks' inputs (which every rank can rebuild:
each is drawn from a generator seeded by rank and round). The all-reduce
runs both ways: through the shared-memory slots (small tensors, many rounds
so both banks are reused) and through gloo (a tensor larger than a slot).
Nothing may be left in /dev/shm afterwards."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from tests.entrypoints.server import free_port as _free_port


def _input(rank: int, round_: int, shape, dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 * rank + round_)
    return torch.randn(shape, generator=generator).to(dtype)


def _two_ranks(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    from vllm import distributed as vd
    vd.init_distributed_environment(2, rank, f"tcp://127.0.0.1:{port}")
    vd.initialize_model_parallel(2, 1)
    tp = vd.get_tp_group()
    assert tp.shm is not None and (tp.world_size, tp.rank_in_group) == (2, rank)
    assert vd.get_tensor_model_parallel_world_size() == 2
    assert vd.get_tensor_model_parallel_rank() == rank
    # all-reduce through shared memory: rounds reuse both banks
    for round_ in range(7):
        for dtype in (torch.float32, torch.bfloat16):
            shape = (3 + round_, 40)
            x = _input(rank, round_, shape, dtype)
            before = x.clone()
            got = vd.tensor_model_parallel_all_reduce(x)
            expected = _input(0, round_, shape, dtype) + _input(1, round_, shape, dtype)
            assert torch.equal(got, expected), (round_, dtype)
            assert torch.equal(x, before)  # the input is left alone
    # all-reduce through gloo: larger than a slot
    big = (tp.shm.slot_bytes // 4 + 1000,)
    assert not tp.shm.fits(torch.empty(big))
    got = vd.tensor_model_parallel_all_reduce(_input(rank, 50, big, torch.float32))
    torch.testing.assert_close(got, _input(0, 50, big, torch.float32)
                               + _input(1, 50, big, torch.float32))
    # all-gather along each dim, gather to each rank
    for dim in (0, -1):
        got = vd.tensor_model_parallel_all_gather(_input(rank, 60, (4, 6), torch.float32), dim)
        assert torch.equal(got, torch.cat([_input(r, 60, (4, 6), torch.float32)
                                           for r in range(2)], dim=dim))
    for dst in (0, 1):
        got = vd.tensor_model_parallel_gather(_input(rank, 70, (2, 5), torch.float32), dst, -1)
        if rank == dst:
            assert torch.equal(got, torch.cat([_input(r, 70, (2, 5), torch.float32)
                                               for r in range(2)], dim=-1))
        else:
            assert got is None
    # broadcast of a dict of tensors and plain values, from rank 1
    sent = {"ids": torch.arange(7), "hidden": _input(1, 80, (3, 4), torch.bfloat16),
            "step": 12, "names": ["a", "b"], "empty": torch.empty(0, 3)}
    got = vd.broadcast_tensor_dict(sent if rank == 1 else None, src=1)
    assert got.keys() == sent.keys() and got["step"] == 12 and got["names"] == ["a", "b"]
    for key in ("ids", "hidden", "empty"):
        assert torch.equal(got[key], sent[key]) and got[key].dtype == sent[key].dtype
    # send / recv of a dict between the two ranks, both ways
    world = vd.get_world_group()
    for src in (0, 1):
        if rank == src:
            world.send_tensor_dict({"x": _input(src, 90, (5,), torch.float32), "tag": src},
                                   dst=1 - src)
        else:
            got = world.recv_tensor_dict(src=src)
            assert got["tag"] == src and torch.equal(got["x"], _input(src, 90, (5,),
                                                                      torch.float32))
    vd.destroy_distributed_environment()


def _four_ranks(rank: int, port: int) -> None:
    """TP 2 x PP 2: groups by vLLM's layout (tp = consecutive ranks)."""
    torch.set_num_threads(1)
    from vllm import distributed as vd
    vd.init_distributed_environment(4, rank, f"tcp://127.0.0.1:{port}")
    vd.initialize_model_parallel(2, 2)
    tp, pp = vd.get_tp_group(), vd.get_pp_group()
    assert tp.ranks == [rank - rank % 2, rank - rank % 2 + 1]
    assert pp.ranks == [rank % 2, rank % 2 + 2]
    got = vd.tensor_model_parallel_all_reduce(_input(rank, 1, (8,), torch.float32))
    assert torch.equal(got, sum(_input(r, 1, (8,), torch.float32) for r in tp.ranks))
    # pipeline stages hand a dict down the pp group
    if pp.is_first_rank:
        pp.send_tensor_dict({"hidden": _input(rank, 2, (2, 3), torch.float32)})
    else:
        got = pp.recv_tensor_dict()
        assert torch.equal(got["hidden"], _input(pp.prev_rank, 2, (2, 3), torch.float32))
    vd.destroy_distributed_environment()


def _shm_segments() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


# 4 ranks (TP 2 x PP 2) take ~10 s of process start-up: CI's slow step
@pytest.mark.parametrize("ranks", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_collectives_match_their_definitions(ranks):
    before = _shm_segments()
    mp.spawn(_two_ranks if ranks == 2 else _four_ranks, args=(_free_port(),), nprocs=ranks,
             join=True)
    assert _shm_segments() - before == set()


def test_groups_need_the_environment_and_sizes_that_fill_the_world():
    from vllm import distributed as vd
    from vllm.distributed import parallel_state
    with pytest.raises(RuntimeError, match="init_distributed_environment must come first"):
        parallel_state.initialize_model_parallel(2, 1)
    with pytest.raises(ValueError, match="backend 'nccl' is not supported on CPU"):
        vd.init_distributed_environment(1, 0, f"tcp://127.0.0.1:{_free_port()}", backend="nccl")
    vd.init_distributed_environment(1, 0, f"tcp://127.0.0.1:{_free_port()}")
    try:
        with pytest.raises(ValueError, match=r"tensor_parallel_size 2 x pipeline_parallel_size 1 "
                                             r"!= world size 1"):
            vd.initialize_model_parallel(2, 1)
        vd.initialize_model_parallel(1, 1)  # one rank: every collective is the identity
        x = torch.randn(3)
        assert vd.tensor_model_parallel_all_reduce(x) is x
        assert vd.get_tp_group().shm is None
    finally:
        vd.destroy_distributed_environment()
