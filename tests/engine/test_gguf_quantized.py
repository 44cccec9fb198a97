"""GGUF weights served in their stored block types (quantization "gguf", the
default for a .gguf file): the block conversion against the `gguf`
package's own dequantize, the embedded SmolLM2 Q4_1 loaded without a
dense copy of its projections, its greedy output against transformers
running the dequantized weights in fp32 (x is computed in int8 here, so a
divergence counts only where transformers itself is near a tie), and the
errors for methods we do not load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vllm import LLM, SamplingParams
from vllm import _custom_ops as ops
from vllm.model_executor.layers.quantization import resolve_quantization
from vllm.model_executor.layers.quantization.gguf import BLOCKS, gguf_quantized

from tests.engine.conftest import CHAT_PROMPTS, chat_token_ids

gguf = pytest.importorskip("gguf")
needs_kernel = pytest.mark.skipif(not ops.quant_linear_available(),
                                  reason="no quantized CPU kernel in the active variant")

# where each type keeps its fp16 scale(s): offsets in the block
_SCALE_AT = {"Q4_0": [0], "Q4_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2],
             "Q6_K": [208]}


def random_blocks(type_name: str, n: int, k: int, rng) -> np.ndarray:
    """Random bytes in the type's block layout, with small finite fp16 scales."""
    per_block, block_bytes = BLOCKS[type_name]
    raw = rng.integers(0, 256, (n, k // per_block, block_bytes), dtype=np.uint8)
    for at in _SCALE_AT[type_name]:
        scale = (rng.random((n, k // per_block, 1)) * 0.01 + 1e-3).astype(np.float16)
        raw[..., at:at + 2] = scale.view(np.uint8)
    return raw.reshape(n, -1)


@pytest.mark.parametrize("type_name", list(BLOCKS))
def test_blocks_convert_to_what_gguf_dequantizes(type_name):
    rng = np.random.default_rng(7)
    n, k = 5, 768
    raw = random_blocks(type_name, n, k, rng)
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name]).astype(np.float64)
    got = gguf_quantized(raw, type_name, n, k).dequantize(torch.float64).numpy()
    # legacy types keep their fp16 scales exactly; K-types' products of a
    # super-block scale and a 6/8-bit sub-scale are rounded to fp16
    tol = 0 if type_name in ("Q4_0", "Q4_1", "Q8_0") else 2 ** -10
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


@needs_kernel
def test_embedded_model_loads_quantized_without_a_dense_copy():
    llm = LLM(max_model_len=256)
    model = llm.llm_engine.engine_core.worker.model
    layer = model.model.layers[0]
    for linear in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj,
                   layer.mlp.down_proj):
        assert linear.quantized and linear.packed_weight.dtype == torch.uint8
        assert linear.weight.untyped_storage().nbytes() <= linear.weight.element_size()
    assert model.packed_lm_head.dtype == torch.uint8  # the tied Q8_0 embedding
    projections = sum(p.numel() for m in model.modules() if getattr(m, "quantized", False)
                      for p in [m.packed_weight])
    # Q4_1: 20 bytes a 32-weight block in the file; packed, fp16 scale and offset
    # a group as well: the same bytes
    weights = sum(m.weight.numel() for m in model.modules() if getattr(m, "quantized", False))
    assert projections <= 1.05 * weights * 20 / 32


@needs_kernel
def test_greedy_output_diverges_from_transformers_only_at_near_ties(hf_smollm):
    # bf16: a prompt's step computes as the dense bf16 weights would, decode
    # steps in int8 (llama.cpp's way): the first token is transformers' but
    # for a bf16 tie, and a later divergence comes where its top two are close
    if not ops.packed_linear_available():
        pytest.skip("no bf16 GEMM in the active variant")
    llm = LLM(dtype="bfloat16", max_model_len=512)
    tokenizer = llm.get_tokenizer()
    prompts = [chat_token_ids(tokenizer, p) for p in CHAT_PROMPTS[:6]]
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                           SamplingParams(temperature=0.0, max_tokens=16), use_tqdm=False)
    for prompt, output in zip(prompts, outputs):
        ours = list(output.outputs[0].token_ids)
        with torch.no_grad():
            logits = hf_smollm(torch.tensor([prompt + ours])).logits[0, len(prompt) - 1:-1]
        theirs = logits.argmax(-1).tolist()
        diverged = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
        if diverged is None:
            continue
        # transformers' choice and ours, both on our prefix
        row = logits[diverged]
        gap = (row[theirs[diverged]] - row[ours[diverged]]).item()
        assert gap < (0.1 if diverged == 0 else 0.5), (tokenizer.decode(ours), diverged, gap)
    france = llm.chat([{"role": "user", "content": CHAT_PROMPTS[0]}],
                      SamplingParams(temperature=0.0, max_tokens=16), use_tqdm=False)
    assert "Paris" in france[0].outputs[0].text


@needs_kernel
def test_layer_loop_in_cpp_gives_the_layer_by_layer_tokens():
    from vllm.model_executor.models.fused_decode import FusedDecode
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    prompts = ["The three largest cities in Japan are", "def fibonacci(n):"]
    llm = LLM(max_model_len=256)
    fused = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    try:
        FusedDecode.enabled = False
        plain = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    finally:
        FusedDecode.enabled = True
    assert fused == plain


def test_methods_we_do_not_load_are_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown quantization method: bogus"):
        resolve_quantization("bogus", True, None)
    with pytest.raises(ValueError, match="needs a .gguf file"):
        resolve_quantization("gguf", False, None)
    with pytest.raises(ValueError, match=r"model config \(gguf\) does not match .* \(awq\)"):
        resolve_quantization("awq", True, None)

    class Config:
        quantization_config = {"quant_method": "bitsandbytes", "bits": 4}
    with pytest.raises(ValueError, match="quantized with 'bitsandbytes'.*supported: awq, gptq, gguf"):
        resolve_quantization(None, False, Config())
    with pytest.raises(ValueError, match="a bitsandbytes checkpoint cannot load unquantized"):
        resolve_quantization("none", False, Config())
    assert resolve_quantization("none", True, None) is None


def test_a_fused_projection_mixing_quantized_and_dense_shards_is_served_dense():
    from vllm.model_executor.layers.linear import Linear
    from vllm.model_executor.layers.quantization.packing import QuantizedWeight
    layer = Linear(64, {"q": 32, "k": 16, "v": 16}, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    q = QuantizedWeight(torch.randint(0, 16, (32, 64), generator=g, dtype=torch.uint8),
                        torch.rand(32, 2, generator=g).half(), torch.rand(32, 2, generator=g).half(),
                        4, 32)
    k, v = torch.randn(16, 64, generator=g), torch.randn(16, 64, generator=g)
    layer.load("weight", q, "q")
    layer.load("weight", k, "k")
    layer.load("weight", v, "v")
    layer.process_weights_after_loading()
    assert not layer.quantized
    want = torch.cat([q.dequantize(), k, v])
    assert torch.equal(layer.weight, want)
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), x @ want.T)
