"""Decode batches padded to a captured size (the CUDA-graph path, run
eagerly here: DecodeGraphs(capture=False)) give the unpadded steps' tokens
and logprobs: padded rows write no cache entry and touch no real row.
Batches above the largest size run as before. (Logprobs within 1e-4, not
bit for bit: torch's fp32 GEMM sums in another order for 4 rows than for
3, ~5e-6 here; 5 rows padded to 8 came out identical.)"""
import pytest

from vllm import SamplingParams
from vllm.worker.cuda_graphs import DecodeGraphs


def _run(llm, prompts):
    params = SamplingParams(temperature=0.0, max_tokens=10, logprobs=3, ignore_eos=True)
    outs = llm.generate(prompts, params, use_tqdm=False)
    return [(o.outputs[0].token_ids,
             [{k: v.logprob for k, v in step.items()} for step in o.outputs[0].logprobs])
            for o in outs]


def _assert_same(padded, plain):
    for (tokens, logprobs), (want_tokens, want_logprobs) in zip(padded, plain, strict=True):
        assert tokens == want_tokens
        for step, want in zip(logprobs, want_logprobs, strict=True):
            assert step.keys() == want.keys()
            assert step == pytest.approx(want, abs=1e-4)


def test_padded_decode_batches_change_no_real_row(smollm_fp32):
    engine = smollm_fp32.llm_engine
    worker = engine.engine_core.worker
    config = engine.vllm_config
    prompts = ["The capital of France is", "Write a haiku about the sea.",
               "One two three four", "Colors of the rainbow:", "Dear diary,"]
    # 5 sequences pad to 8; 3 (after a split) to 4; 9 exceed the largest size
    batches = [prompts, prompts[:3], prompts + prompts[:4]]
    plain = [_run(smollm_fp32, b) for b in batches]
    smollm_fp32.reset_prefix_cache()
    graphs = DecodeGraphs(worker.model, [1, 2, 4, 8], config.cache_config.block_size,
                          config.model_config.max_model_len, worker.runner.device, capture=False)
    calls = []
    run = graphs.run
    graphs.run = lambda size, inputs, n: calls.append((size, n)) or run(size, inputs, n)
    worker.runner.decode_graphs = graphs
    try:
        padded = [_run(smollm_fp32, b) for b in batches]
    finally:
        worker.runner.decode_graphs = None
        smollm_fp32.reset_prefix_cache()
    for got, want in zip(padded, plain, strict=True):
        _assert_same(got, want)
    assert (8, 5) in calls and (4, 3) in calls  # padded batches did run that way
    assert all(n <= 8 for _, n in calls)  # the 9-sequence steps ran eagerly


def test_padded_rows_write_no_cache_entry(smollm_fp32):
    """One padded step (3 real rows run as 8): in the first blocks of every
    layer's cache, exactly the real rows' slots change."""
    import torch
    worker = smollm_fp32.llm_engine.engine_core.worker
    config = smollm_fp32.llm_engine.vllm_config
    bs = config.cache_config.block_size
    graphs = DecodeGraphs(worker.model, [8], bs, config.model_config.max_model_len,
                          worker.runner.device, capture=False)
    layers = worker.model.attention_layers()
    before = [(k[:4].clone(), v[:4].clone()) for k, v in (layer.kv_cache for layer in layers)]
    slots = [1 * bs + 3, 2 * bs + 0, 3 * bs + 7]  # blocks 1-3; block 0 is what padding reads
    inputs = {"input_ids": torch.tensor([100, 200, 300]),
              "positions": torch.tensor([3, 0, 7]),
              "slot_mapping": torch.tensor(slots),
              "seq_lens": torch.tensor([4, 1, 8], dtype=torch.int32),
              "block_tables": torch.tensor([[1], [2], [3]], dtype=torch.int32)}
    try:
        hidden = graphs.run(8, inputs, 3)
        assert hidden.shape[0] == 3
        changed = set()
        for layer, (k0, v0) in zip(layers, before):
            k, v = layer.kv_cache
            # key [blocks, heads, head_size, block_size], value [blocks, heads, block_size, head]
            for block, offset in (k[:4] != k0).any(dim=2).any(dim=1).nonzero().tolist():
                changed.add(block * bs + offset)
            for block, offset in (v[:4] != v0).any(dim=3).any(dim=1).nonzero().tolist():
                changed.add(block * bs + offset)
        assert changed == set(slots)
    finally:
        for layer, (k0, v0) in zip(layers, before):  # leave the shared engine's cache as it was
            layer.kv_cache[0][:4].copy_(k0)
            layer.kv_cache[1][:4].copy_(v0)
