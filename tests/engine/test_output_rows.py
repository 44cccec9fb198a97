"""The model's last layer on the step's output rows only (the sampled rows:
each finished prompt's last token and every decode token) against the same
step computed for every row: the same hidden states for those rows (bit
for bit in bf16) and the same KV-cache writes, on a random Llama model with
fresh random weights, both attention backends, bf16 and fp32; the rows
read: the finished prompt's and the decode's, the chunk's alone, none."""
from __future__ import annotations

import pytest
import torch

from vllm.attention.backends.paged import PagedAttentionBackend
from vllm.attention.backends.torch_sdpa import TorchSDPABackend
from vllm.forward_context import set_forward_context
from vllm.model_executor.models.llama import LlamaForCausalLM

from tests.kernels.test_decode_layers import mixed_step, random_model


def run(model, ids, positions, md):
    with torch.inference_mode(), set_forward_context(md):
        return model(ids, positions)


@pytest.mark.parametrize("backend", [PagedAttentionBackend, TorchSDPABackend], ids=["paged", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("sampled", [[True, False, True], [False, True, False], [False, False, False]])
def test_last_layer_on_output_rows_matches_all_rows(backend, dtype, sampled):
    model = random_model(LlamaForCausalLM, "silu", dtype, inter=384, backend=backend)
    md, pruned, positions, rows = mixed_step(sampled)
    before = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    ids = torch.randint(0, 300, (positions.shape[0],))
    full = run(model, ids, positions, md)
    full_caches = [tuple(c.clone() for c in a.kv_cache) for a in model.attention_layers()]
    for attn, (k, v) in zip(model.attention_layers(), before):
        attn.kv_cache[0].copy_(k)
        attn.kv_cache[1].copy_(v)
    got = run(model, ids, positions, pruned)
    assert got.shape == (len(rows), 192)
    assert torch.isfinite(full).all()
    if dtype == torch.bfloat16:
        assert torch.equal(got, full[rows])  # our kernels: each row's sums in one order
    else:  # fp32 GEMMs are torch's, whose blocking (summation order) follows the row count
        torch.testing.assert_close(got, full[rows], rtol=1e-5, atol=1e-5)
    for attn, (k, v) in zip(model.attention_layers(), full_caches):
        assert torch.equal(attn.kv_cache[0], k) and torch.equal(attn.kv_cache[1], v)
