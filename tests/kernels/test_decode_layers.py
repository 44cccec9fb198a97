"""fused_decode_layers (all decoder layers of a step in one C++ call: decode
steps, and prefill / mixed steps with the last layer on the output rows)
against the layer-by-layer modules it replaces: same hidden states, same
residual, same KV-cache writes, bit for bit, on random Llama / Qwen2 models
with fresh random weights and caches."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import LlamaConfig

from vllm import _custom_ops as ops
from vllm.attention.backends.metadata import AttentionMetadata
from vllm.attention.backends.paged import PagedAttentionBackend
from vllm.attention.kv_cache_layout import kv_cache_shapes
from vllm.forward_context import set_forward_context
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not hasattr(torch.ops._C, "fused_decode_layers"),
                                reason="CPU builds only")
BLOCK = 16
NUM_BLOCKS = 40


def random_model(cls, act: str, dtype: torch.dtype, inter: int = 320,
                 backend=PagedAttentionBackend):
    """3 layers, hidden 192, 6 query / 2 KV heads of 64, random caches of
    NUM_BLOCKS blocks of BLOCK tokens."""
    config = LlamaConfig(vocab_size=300, hidden_size=192, intermediate_size=inter,
                         num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                         head_dim=64, hidden_act=act, max_position_embeddings=512)
    model = cls(config, dtype, backend)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    model.process_weights_after_loading()
    shapes = kv_cache_shapes(NUM_BLOCKS, BLOCK, 2, 64)
    for attn in model.attention_layers():
        attn.kv_cache = (torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype))
    return model


def decode_metadata(rows: int) -> tuple[AttentionMetadata, torch.Tensor]:
    # each sequence owns 4 distinct blocks; contexts of different lengths
    seq_lens = torch.randint(1, 4 * BLOCK, (rows,), dtype=torch.int32)
    tables = torch.randperm(NUM_BLOCKS)[:4 * rows].reshape(rows, 4).to(torch.int32)
    positions = seq_lens.long() - 1
    slots = tables[torch.arange(rows), positions // BLOCK].long() * BLOCK + positions % BLOCK
    md = AttentionMetadata(slot_mapping=slots,
                           query_start_loc=torch.arange(rows + 1, dtype=torch.int32),
                           seq_lens=seq_lens, block_tables=tables, max_query_len=1,
                           max_seq_len=int(seq_lens.max()), block_size=BLOCK)
    return md, positions


def mixed_step(sampled: list[bool]):
    """Three sequences: a whole 20-token prompt, a 16-token chunk (tokens
    8-23) of a longer prompt, one decode token after 29 cached ones; the
    rows `sampled` says are read."""
    computed, counts = [0, 8, 29], [20, 16, 1]
    tables = torch.arange(NUM_BLOCKS, dtype=torch.int32)[:18].reshape(3, 6)
    positions, slots, starts = [], [], [0]
    for seq, (c, n) in enumerate(zip(computed, counts)):
        for p in range(c, c + n):
            positions.append(p)
            slots.append(int(tables[seq, p // BLOCK]) * BLOCK + p % BLOCK)
        starts.append(starts[-1] + n)
    seq_lens = [c + n for c, n in zip(computed, counts)]
    md = AttentionMetadata(slot_mapping=torch.tensor(slots),
                           query_start_loc=torch.tensor(starts, dtype=torch.int32),
                           seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
                           block_tables=tables, max_query_len=max(counts),
                           max_seq_len=max(seq_lens), block_size=BLOCK)
    rows = [starts[i + 1] - 1 for i in range(3) if sampled[i]]
    per_seq = [0] + [int(s) for s in sampled]
    pruned = dataclasses.replace(
        md, output_rows=torch.tensor(rows, dtype=torch.int64),
        output_query_start_loc=torch.tensor(per_seq, dtype=torch.int32).cumsum(0).to(torch.int32))
    return md, pruned, torch.tensor(positions), rows


def run(model, ids, positions, md, fused: bool):
    model.model.fused_decode.enabled = fused
    with torch.inference_mode(), set_forward_context(md):
        assert model.model.fused_decode.applicable(model.model.embed_tokens(ids), md) == fused
        return model(ids, positions)


# The linears as the modules choose them: bf16 on AVX512-BF16 or AVX2
# packed_linear at any rows and the gate/up projection fused with its
# activation (an intermediate size of 384 = 8 x 48 panels, or 320 = 6 2/3,
# the last panel padded); elsewhere 1-3 rows the small-row
# kernel, 4 and 9 oneDNN on packed bf16 weights, F.linear for fp16.
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("cls, act", [(LlamaForCausalLM, "silu"), (Qwen2ForCausalLM, "silu"),
                                      (LlamaForCausalLM, "gelu_pytorch_tanh")],
                         ids=["llama", "qwen2-bias", "gelu-tanh"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("inter", [320, 384])
def test_matches_the_layer_by_layer_path(cpu_isa, rows, cls, act, dtype, inter):
    model = random_model(cls, act, dtype, inter)
    gate_up = model.model.layers[0].mlp.gate_up_proj.packed_weight
    fused_mlp = dtype == torch.bfloat16 and ops.packed_linear_available()
    assert (gate_up is not None and gate_up.dim() == 5) == fused_mlp
    md, positions = decode_metadata(rows)
    ids = torch.randint(0, 300, (rows,))
    before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    expected = run(model, ids, positions, md, fused=False)
    expected_caches = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    for attn, (k, v) in zip(model.attention_layers(), before):  # back to the old caches
        attn.kv_cache[0].copy_(k)
        attn.kv_cache[1].copy_(v)
    got = run(model, ids, positions, md, fused=True)
    assert torch.isfinite(expected).all()
    assert torch.equal(got, expected)
    for attn, (k, v) in zip(model.attention_layers(), expected_caches):
        assert torch.equal(attn.kv_cache[0], k) and torch.equal(attn.kv_cache[1], v)


@pytest.mark.parametrize("rows", [1, 4])
def test_the_input_hidden_states_are_not_written(cpu_isa, rows):
    """The op reuses one buffer per intermediate across layers (the next
    layer's hidden states included): never the caller's input, and two
    calls on the same input give the same output."""
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16, 384)
    md, positions = decode_metadata(rows)
    hidden = torch.randn(rows, model.config.hidden_size).to(torch.bfloat16)
    before = hidden.clone()
    caches = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    with torch.inference_mode():
        first, _ = model.model.fused_decode.run(hidden, positions, md)
        first = first.clone()
        for attn, (k, v) in zip(model.attention_layers(), caches):
            attn.kv_cache[0].copy_(k)
            attn.kv_cache[1].copy_(v)
        second, _ = model.model.fused_decode.run(hidden, positions, md)
    assert torch.equal(hidden, before)
    assert torch.equal(first, second)


# One bf16 decode row on packed weights takes the one-row loop (the call in
# one parallel region; csrc/cpu/decode_one_row.cpp) whenever torch has more
# than one thread: 1 thread runs the general loop; with 2 and 3 the last
# thread runs the panels it prefetched during the serial work first, and the
# rest are dealt out as the threads finish, differently each run. The same
# bits every way.
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_decode_row_matches_the_layer_by_layer_path_at_any_thread_count(cpu_isa, threads):
    if not ops.packed_linear_available():
        pytest.skip("no packed_linear kernel on this CPU variant")
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16, 384)
    md, positions = decode_metadata(1)
    ids = torch.randint(0, 300, (1,))
    before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    expected = run(model, ids, positions, md, fused=False)
    expected_caches = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(3):  # the split differs run to run; the bits must not
            for attn, (k, v) in zip(model.attention_layers(), before):
                attn.kv_cache[0].copy_(k)
                attn.kv_cache[1].copy_(v)
            got = run(model, ids, positions, md, fused=True)
            assert torch.equal(got, expected)
            for attn, (k, v) in zip(model.attention_layers(), expected_caches):
                assert torch.equal(attn.kv_cache[0], k) and torch.equal(attn.kv_cache[1], v)
    finally:
        torch.set_num_threads(default_threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_error_inside_the_layer_loop_is_raised(cpu_isa, threads):
    """A check that fails in the middle of the loop (here the cache write's,
    on a slot past the cache) reaches the caller as the op's error, from
    the one-row loop's parallel region as from the general loop."""
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16, 384)
    md, positions = decode_metadata(1)
    md = dataclasses.replace(md, slot_mapping=torch.tensor([NUM_BLOCKS * BLOCK + 3]))
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(RuntimeError, match="is beyond the cache's"):
            run(model, torch.randint(0, 300, (1,)), positions, md, fused=True)
    finally:
        torch.set_num_threads(default_threads)


def test_other_steps_keep_the_layer_by_layer_path():
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16)
    fused = model.model.fused_decode
    md, _ = decode_metadata(3)
    hidden = torch.zeros(4, 192, dtype=torch.bfloat16)
    assert not fused.applicable(hidden[:1].float(), md)  # fp32
    assert fused.applicable(hidden[:1], md)
    fused.enabled = False
    assert not fused.applicable(hidden[:1], md)


@pytest.mark.parametrize("sampled", [None, [True, False, True], [False, False, False]],
                         ids=["all-rows", "output-rows", "no-rows"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_prefill_and_mixed_steps_match_the_layer_by_layer_path(cpu_isa, dtype, sampled):
    # A whole prompt, a chunk of a longer one and a decode token in one step;
    # with output rows, the last layer on those rows only (as the modules).
    model = random_model(LlamaForCausalLM, "silu", dtype, inter=384)
    md, pruned, positions, rows = mixed_step(sampled or [True] * 3)
    md = md if sampled is None else pruned
    ids = torch.randint(0, 300, (positions.shape[0],))
    before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    expected = run(model, ids, positions, md, fused=False)
    expected_caches = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    for attn, (k, v) in zip(model.attention_layers(), before):
        attn.kv_cache[0].copy_(k)
        attn.kv_cache[1].copy_(v)
    got = run(model, ids, positions, md, fused=True)
    assert got.shape == (positions.shape[0] if sampled is None else len(rows), 192)
    assert torch.isfinite(expected).all()
    assert torch.equal(got, expected)
    for attn, (k, v) in zip(model.attention_layers(), expected_caches):
        assert torch.equal(attn.kv_cache[0], k) and torch.equal(attn.kv_cache[1], v)


def test_bad_arguments_are_clear_errors():
    x = torch.zeros(1, 64, dtype=torch.bfloat16)
    cache = torch.zeros(kv_cache_shapes(2, BLOCK, 1, 64).key, dtype=torch.bfloat16)
    common = dict(cos_sin_cache=torch.zeros(8, 64, dtype=torch.bfloat16),
                  slot_mapping=torch.zeros(1, dtype=torch.int64),
                  block_tables=torch.zeros(1, 1, dtype=torch.int32),
                  seq_lens=torch.ones(1, dtype=torch.int32), block_size=BLOCK, max_seq_len=1,
                  num_heads=1, num_kv_heads=1, head_size=64, epsilon=1e-5, scale=0.125,
                  is_neox=True)
    pos = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="expected 6 weights"):
        ops.fused_decode_layers(x, pos, [x], [None] * 4, [None] * 4, 3, [cache], [cache],
                                activation="silu", **common)
    with pytest.raises(RuntimeError, match="expected 4 packed weights"):
        ops.fused_decode_layers(x, pos, [x] * 6, [None] * 4, [None] * 3, 3, [cache], [cache],
                                activation="silu", **common)
    with pytest.raises(RuntimeError, match="activation 'relu'"):
        ops.fused_decode_layers(x, pos, [x] * 6, [None] * 4, [None] * 4, 3, [cache], [cache],
                                activation="relu", **common)


def reset_caches(model, caches) -> None:
    for attn, (k, v) in zip(model.attention_layers(), caches):
        attn.kv_cache[0].copy_(k)
        attn.kv_cache[1].copy_(v)


@pytest.mark.parametrize("rows", [1, 3])
def test_steps_on_one_registered_plan_match_the_layer_by_layer_path(cpu_isa, rows):
    """The model registers its layers once (fused_decode_plan) and every
    step runs on that plan, whose one-row loop keeps its buffers from call
    to call: step after step (other positions, other block tables), the
    same bits as the modules, and an earlier step's result is not
    overwritten by a later one."""
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16, 384)
    fused = model.model.fused_decode
    results, plans = [], set()
    for _ in range(4):
        md, positions = decode_metadata(rows)
        ids = torch.randint(0, 300, (rows,))
        before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
        expected = run(model, ids, positions, md, fused=False)
        expected_caches = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
        reset_caches(model, before)
        got = run(model, ids, positions, md, fused=True)
        assert torch.equal(got, expected)
        for attn, (k, v) in zip(model.attention_layers(), expected_caches):
            assert torch.equal(attn.kv_cache[0], k) and torch.equal(attn.kv_cache[1], v)
        results.append((got, got.clone()))
        plans.add(fused._plan)
    assert len(plans) == 1 and None not in plans  # one registration for every step
    for got, copy in results:
        assert torch.equal(got, copy)


def test_new_caches_get_a_new_plan_and_a_released_plan_is_an_error(cpu_isa):
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16, 384)
    fused = model.model.fused_decode
    md, positions = decode_metadata(1)
    ids = torch.randint(0, 300, (1,))
    run(model, ids, positions, md, fused=True)
    old_plan = fused._plan
    shapes = kv_cache_shapes(NUM_BLOCKS, BLOCK, 2, 64)
    for attn in model.attention_layers():  # as a worker that allocates the caches anew
        attn.kv_cache = (torch.randn(shapes.key).to(torch.bfloat16),
                         torch.randn(shapes.value).to(torch.bfloat16))
    before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    expected = run(model, ids, positions, md, fused=False)
    reset_caches(model, before)
    assert torch.equal(run(model, ids, positions, md, fused=True), expected)
    assert fused._plan != old_plan
    with pytest.raises(RuntimeError, match=f"no plan {old_plan}"):
        ops.fused_decode_planned(old_plan, torch.zeros(1, 192, dtype=torch.bfloat16), positions,
                                 md.slot_mapping, md.block_tables, md.seq_lens, BLOCK,
                                 md.max_seq_len)


def test_a_step_from_token_ids_folds_in_the_embedding_and_the_final_norm(cpu_isa):
    """With both ends of the model on this rank, the model's forward is one
    call from the token ids (run_from_ids): the same bits as embedding,
    layers and final norm run apart; a token id outside the table is a clear
    error, not a read past it."""
    model = random_model(LlamaForCausalLM, "silu", torch.bfloat16, 384)
    fused = model.model.fused_decode
    md, positions = decode_metadata(2)
    ids = torch.randint(0, 300, (2,))
    assert fused.applicable_to_ids(ids, md)
    before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    with torch.inference_mode(), set_forward_context(md):
        hidden, residual = fused.run(model.model.embed_tokens(ids), positions, md)
        expected, _ = model.model.norm(hidden, residual)
        reset_caches(model, before)
        got = fused.run_from_ids(ids, positions, md)
        assert torch.equal(got, expected)
        with pytest.raises(RuntimeError, match="token id 300 is outside the embedding's 300 rows"):
            fused.run_from_ids(torch.tensor([5, 300]), positions, md)
