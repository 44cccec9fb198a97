"""MLA on CPU (concat_and_cache_mla, mla_decode_kvcache, mla_prefill_kvcache)
against a float64 reference written from DeepSeek-V2's equations, not
absorbed: every cached latent up-projected to per-head keys k = [W_UK c,
k_pe] and values v = W_UV c, then softmax attention. The kernels get the
absorbed query (W_UK folded in) and their output goes through W_UV, so a
wrong score, weight, mask, block lookup or sum shows up against it. Paged
caches with random block tables, ragged lengths, per ISA."""
from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)

SCALE_1 = torch.tensor(1.0)
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
       torch.float16: dict(rtol=3e-3, atol=3e-3)}


class Shape:
    def __init__(self, heads, lora, rope, nope, v):
        self.heads, self.lora, self.rope, self.nope, self.v = heads, lora, rope, nope, v


SHAPES = {"deepseek-v2-lite": Shape(16, 512, 64, 128, 128),
          "tiny": Shape(4, 32, 16, 24, 20),
          "odd-heads": Shape(3, 64, 16, 16, 16)}


def make_tables(seq_lens, block_size, num_blocks):
    max_blocks = max(1, max(math.ceil(n / block_size) for n in seq_lens))
    perm = torch.randperm(num_blocks)[: len(seq_lens) * max_blocks]
    return perm.reshape(len(seq_lens), max_blocks).to(torch.int32)


def reference(q_nope, q_pe, cache, w_kv_b, shape, tables, seq_lens, q_lens, scale):
    """Paper form, float64: per sequence, keys and values up-projected from
    its cached latents; query token j of a q_len-token step sits at
    position seq_len - q_len + j and sees positions up to it."""
    s = shape
    per_head = w_kv_b.double().view(s.heads, s.nope + s.v, s.lora)
    w_uk, w_uv = per_head[:, :s.nope], per_head[:, s.nope:]
    block_size = cache.shape[1]
    outs, start = [], 0
    for i, (seq_len, q_len) in enumerate(zip(seq_lens, q_lens)):
        blocks = tables[i, :math.ceil(seq_len / block_size)].long()
        lat = cache[blocks].reshape(-1, cache.shape[2])[:seq_len].double()
        c, k_pe = lat[:, :s.lora], lat[:, s.lora:]
        keys = torch.cat([torch.einsum("hnl,pl->phn", w_uk, c),
                          k_pe[:, None, :].expand(seq_len, s.heads, s.rope)], dim=-1)
        values = torch.einsum("hvl,pl->phv", w_uv, c)
        q = torch.cat([q_nope[start:start + q_len], q_pe[start:start + q_len]], -1).double()
        scores = torch.einsum("thd,phd->htp", q, keys) * scale
        pos = torch.arange(seq_len)
        visible = pos[None, :] <= (seq_len - q_len + torch.arange(q_len))[:, None]
        scores = scores.masked_fill(~visible[None], float("-inf"))
        outs.append(torch.einsum("htp,phv->thv", scores.softmax(-1), values))
        start += q_len
    return torch.cat(outs)


def absorbed(q_nope, q_pe, w_kv_b, shape, dtype):
    """The kernels' query: W_UK folded in, rope part appended."""
    s = shape
    w_uk = w_kv_b.view(s.heads, s.nope + s.v, s.lora)[:, :s.nope]
    q_latent = torch.einsum("thn,hnl->thl", q_nope.float(), w_uk.float())
    return torch.cat([q_latent, q_pe.float()], -1).to(dtype)


def apply_w_uv(out_latent, w_kv_b, shape):
    s = shape
    w_uv = w_kv_b.view(s.heads, s.nope + s.v, s.lora)[:, s.nope:]
    return torch.einsum("thl,hvl->thv", out_latent.double(), w_uv.double())


def make_case(shape, dtype, seq_lens, q_lens, block_size):
    s = shape
    num_blocks = len(seq_lens) * max(math.ceil(n / block_size) for n in seq_lens) + 7
    cache = (torch.randn(num_blocks, block_size, s.lora + s.rope) * 0.5).to(dtype)
    tables = make_tables(seq_lens, block_size, num_blocks)
    tokens = sum(q_lens)
    w_kv_b = (torch.randn(s.heads * (s.nope + s.v), s.lora) / math.sqrt(s.lora)).to(dtype)
    q_nope = torch.randn(tokens, s.heads, s.nope).to(dtype)
    q_pe = torch.randn(tokens, s.heads, s.rope).to(dtype)
    return cache, tables, w_kv_b, q_nope, q_pe


def check_decode(s: Shape, dtype, seq_lens, block_size, seed):
    """mla_decode_kvcache (output poisoned first) against the reference."""
    torch.manual_seed(seed)
    q_lens = [1] * len(seq_lens)
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, dtype, seq_lens, q_lens, block_size)
    scale = (s.nope + s.rope) ** -0.5
    query = absorbed(q_nope, q_pe, w_kv_b, s, dtype)
    out = torch.full((len(seq_lens), s.heads, s.lora), float("nan"), dtype=dtype)
    ops.mla_decode_kvcache(out, query, cache, scale, tables,
                           torch.tensor(seq_lens, dtype=torch.int32))
    expected = reference(q_nope, q_pe, cache, w_kv_b, s, tables, seq_lens, q_lens, scale)
    torch.testing.assert_close(apply_w_uv(out, w_kv_b, s), expected, check_dtype=False,
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("block_size", [16, 64])
def test_decode_matches_paper_reference(cpu_isa, dtype, shape_name, block_size):
    seq_lens = [1, 37, 130, 64, 5] if shape_name != "deepseek-v2-lite" else [1, 75, 200]
    check_decode(SHAPES[shape_name], dtype, seq_lens, block_size, seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape_name", ["tiny", "deepseek-v2-lite"])
@pytest.mark.parametrize("seq_lens", [[1300], [700, 2], [600, 1]], ids=str)
def test_split_context_decode_matches_paper_reference(cpu_isa, dtype, shape_name, seq_lens):
    """Fewer sequences than threads: the kernel splits each context into
    ranges and merges their partial softmax results (a range past a short
    sequence's end sees nothing)."""
    check_decode(SHAPES[shape_name], dtype, seq_lens, 32, seed=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_prefill_and_chunked_prefill_match_paper_reference(cpu_isa, dtype, shape_name):
    """Whole prompts, prompt chunks after a cached prefix, and a sequence
    with no query rows this step, in one call."""
    s = SHAPES[shape_name]
    torch.manual_seed(1)
    seq_lens = [19, 70, 33, 8, 45]
    q_lens = [19, 25, 1, 0, 45]
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, dtype, seq_lens, q_lens, 16)
    scale = 0.11
    query = absorbed(q_nope, q_pe, w_kv_b, s, dtype)
    out = torch.full((sum(q_lens), s.heads, s.lora), float("nan"), dtype=dtype)
    starts = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32)
    ops.mla_prefill_kvcache(out, query, cache, scale, tables, starts,
                            torch.tensor(seq_lens, dtype=torch.int32))
    expected = reference(q_nope, q_pe, cache, w_kv_b, s, tables, seq_lens, q_lens, scale)
    torch.testing.assert_close(apply_w_uv(out, w_kv_b, s), expected, check_dtype=False,
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_concat_and_cache_mla_writes_slots(dtype):
    torch.manual_seed(2)
    cache = torch.full((6, 16, 48), float("nan")).to(dtype)
    before = cache.clone()
    wide = torch.randn(5, 80).to(dtype)  # row slices, as the model hands them over
    kv_c, k_pe = wide[:, :32], wide[:, 60:76]
    slots = torch.tensor([3, 17, -1, 95, 40])
    ops.concat_and_cache_mla(kv_c, k_pe, cache, slots, "auto", SCALE_1)
    flat, old = cache.view(-1, 48), before.view(-1, 48)
    for t, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        assert torch.equal(flat[slot], torch.cat([kv_c[t], k_pe[t]]))
    untouched = torch.ones(flat.shape[0], dtype=torch.bool)
    untouched[[3, 17, 95, 40]] = False
    assert torch.equal(flat[untouched].isnan(), old[untouched].isnan())


def test_bad_input_gets_clear_errors():
    cache = torch.zeros(4, 16, 40)  # 40: not a multiple of 16
    out = torch.empty(1, 2, 32)
    with pytest.raises(RuntimeError, match="multiples of 16"):
        ops.mla_decode_kvcache(out, torch.zeros(1, 2, 40), cache, 1.0,
                               torch.zeros(1, 1, dtype=torch.int32),
                               torch.ones(1, dtype=torch.int32))
    cache = torch.zeros(4, 16, 48)
    with pytest.raises(RuntimeError, match="outside the cache"):
        ops.mla_decode_kvcache(out, torch.zeros(1, 2, 48), cache, 1.0,
                               torch.full((1, 1), 9, dtype=torch.int32),
                               torch.ones(1, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="do not fill"):
        ops.concat_and_cache_mla(torch.zeros(2, 32), torch.zeros(2, 8), cache,
                                 torch.zeros(2, dtype=torch.int64), "auto", SCALE_1)
    with pytest.raises(RuntimeError, match="kv_cache_dtype"):
        ops.concat_and_cache_mla(torch.zeros(2, 32), torch.zeros(2, 16), cache,
                                 torch.zeros(2, dtype=torch.int64), "fp8", SCALE_1)


def test_opcheck():
    torch.manual_seed(3)
    s = SHAPES["tiny"]
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, torch.float32, [20, 9], [1, 1], 16)
    query = absorbed(q_nope, q_pe, w_kv_b, s, torch.float32)
    out = torch.empty(2, s.heads, s.lora)
    torch.library.opcheck(torch.ops._C.mla_decode_kvcache,
                          (out, query, cache, 0.2, tables, torch.tensor([20, 9], dtype=torch.int32)))
    torch.library.opcheck(torch.ops._C.concat_and_cache_mla,
                          (torch.randn(3, 32), torch.randn(3, 16), cache,
                           torch.tensor([0, 5, 40]), "auto", SCALE_1))
