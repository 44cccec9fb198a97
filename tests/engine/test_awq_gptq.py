"""AWQ and GPTQ checkpoints served quantized: tiny random Llamas packed by
the tests' own packers (tests/engine/quant_checkpoints.py) load into our
kernel's format with the weights the formats define, and generate what
transformers generates from the dequantized weights in fp32 (our x is
rounded to int8 per 32 values, so a divergence counts only where
transformers' own choice is within half precision's margin). Bad
checkpoints fail at load with the tensor and what was expected."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vllm import LLM, SamplingParams
from vllm import _custom_ops as ops
from vllm.model_executor.layers.quantization import resolve_quantization
from vllm.model_executor.layers.quantization.packing import unpack_columns

from tests.engine.quant_checkpoints import save_quantized_llama

needs_kernel = pytest.mark.skipif(not ops.quant_linear_available(),
                                  reason="no quantized CPU kernel in the active variant")

CASES = {
    "awq_g64": dict(method="awq", group_size=64),
    "awq_g-1": dict(method="awq", group_size=-1),
    "gptq4_v1_asym_g64": dict(method="gptq", bits=4, group_size=64),
    "gptq4_v2_sym_g128": dict(method="gptq", bits=4, group_size=128, sym=True, v1=False),
    "gptq4_act_order_g32": dict(method="gptq", bits=4, group_size=32, desc_act=True),
    "gptq8_v1_g32": dict(method="gptq", bits=8, group_size=32),
    "gptq8_act_order_v2_g128": dict(method="gptq", bits=8, group_size=128, desc_act=True,
                                    v1=False),
}


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, smollm_tokenizer):
    """checkpoint(case) -> (folder, transformers' dequantized model), each
    case written once per module; tests that edit one take a copy."""
    written = {}

    def get(case: str):
        if case not in written:
            spec = dict(CASES[case])
            folder = tmp_path_factory.mktemp(case)
            written[case] = folder, save_quantized_llama(folder, smollm_tokenizer,
                                                         spec.pop("method"), **spec)
        return written[case]
    return get


def _linears(model):
    layer = model.model.layers[0]
    return {"qkv": layer.self_attn.qkv_proj, "o": layer.self_attn.o_proj,
            "gate_up": layer.mlp.gate_up_proj, "down": layer.mlp.down_proj}


def _hf_weights(hf):
    layer = hf.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    return {"qkv": torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
            "o": attn.o_proj.weight, "gate_up": torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
            "down": mlp.down_proj.weight}


def _packed_weight(linear) -> torch.Tensor:
    """The weight a quantized layer holds, read back from its packing."""
    from vllm.model_executor.layers.linear import quant_packed_format
    n, k = linear.weight.shape
    bits, group = quant_packed_format(linear.packed_weight, k)
    qw = unpack_columns(linear.packed_weight, bits, group, k, torch.arange(n))
    qw.input_order = linear.input_order
    return qw.dequantize()


@needs_kernel
@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_loads_the_weights_its_format_defines(case, checkpoint):
    spec = CASES[case]
    folder, hf = checkpoint(case)
    llm = LLM(str(folder), dtype="bfloat16", max_model_len=256)
    model = llm.llm_engine.engine_core.worker.model
    ours, theirs = _linears(model), _hf_weights(hf)
    for name, linear in ours.items():
        assert linear.quantized and linear.packed_weight.dtype == torch.uint8, name
        assert linear.weight.untyped_storage().nbytes() <= linear.weight.element_size()
        assert (linear.input_order is not None) == spec.get("desc_act", False)
        want = theirs[name].detach()
        # the zero point becomes an fp16 offset -s z (|s z| <= max |w|): half an fp16 ulp
        tol = 2 ** -11 * want.abs().max().item() * 1.01
        assert (_packed_weight(linear) - want).abs().max().item() <= tol, name
        # and the kernel multiplies by it: bf16 x expanded (no int8 rounding of x)
        x = torch.randn(5, want.shape[1]).to(torch.bfloat16)
        out = torch.full((5, want.shape[0]), float("nan"), dtype=torch.bfloat16)
        from vllm.model_executor.layers.linear import quant_packed_format
        bits, group = quant_packed_format(linear.packed_weight, want.shape[1])
        ops.quant_linear(out, linear.ordered_input(x), linear.packed_weight, bits, group, None, 0)
        ref = x.float() @ want.T
        assert ((out.float() - ref).norm() / ref.norm()).item() < 0.01, name


def _ties_only(hf, prompt: list[int], ours: list[int]) -> list[tuple[int, float, float]]:
    """Positions where our token is not transformers' fp32 choice (on our
    prefix) by more than half precision's margin there: 6x the rms
    difference between transformers' bf16 and fp32 logits at that position
    (our int8 x moves logits up to ~4x that rms on these models; a wrong
    weight moves them by the logits' own spread, ~8)."""
    ids = torch.tensor([prompt + ours])
    with torch.no_grad():
        full = hf(ids).logits[0, len(prompt) - 1:-1].float()
        half = copy.deepcopy(hf).to(torch.bfloat16)(ids).logits[0, len(prompt) - 1:-1].float()
    margin = 6 * (full - half).pow(2).mean(-1).sqrt()
    bad = []
    for i, token in enumerate(ours):
        gap = (full[i].max() - full[i, token]).item()
        if gap > margin[i].item():
            bad.append((i, gap, margin[i].item()))
    return bad


@needs_kernel
@pytest.mark.parametrize("case", list(CASES))
def test_greedy_output_is_transformers_but_for_ties(case, checkpoint, smollm_tokenizer):
    folder, hf = checkpoint(case)
    llm = LLM(str(folder), dtype="float32", max_model_len=256)
    generator = torch.Generator().manual_seed(11)
    prompts = [torch.randint(0, len(smollm_tokenizer), (n,), generator=generator).tolist()
               for n in (7, 23, 40)]
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                           SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                           use_tqdm=False)
    matched = 0
    for prompt, output in zip(prompts, outputs):
        ours = list(output.outputs[0].token_ids)
        assert _ties_only(hf, prompt, ours) == []
        with torch.no_grad():
            theirs = hf(torch.tensor([prompt + ours])).logits[0, len(prompt) - 1:-1].argmax(-1)
        matched += sum(int(a == b) for a, b in zip(ours, theirs.tolist()))
    assert matched >= 0.8 * 36  # ties are the exception


@needs_kernel
def test_modules_to_not_convert_stay_dense(tmp_path, smollm_tokenizer):
    hf = save_quantized_llama(tmp_path, smollm_tokenizer, "awq", group_size=64,
                              skip=("down_proj",))
    llm = LLM(str(tmp_path), dtype="float32", max_model_len=256)
    linears = _linears(llm.llm_engine.engine_core.worker.model)
    assert linears["qkv"].quantized and not linears["down"].quantized
    torch.testing.assert_close(linears["down"].weight, _hf_weights(hf)["down"], rtol=0, atol=0)
    prompt = list(range(100, 120))
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                       use_tqdm=False)[0]
    assert _ties_only(hf, prompt, list(out.outputs[0].token_ids)) == []


def _copy(checkpoint, method: str, tmp_path):
    """A copy of the 4-bit, group-64 checkpoint of `method`, to edit."""
    folder = tmp_path / "model"
    shutil.copytree(checkpoint("awq_g64" if method == "awq" else "gptq4_v1_asym_g64")[0], folder)
    return folder


def _rewrite(folder, edit_tensors=None, edit_quant=None):
    if edit_tensors is not None:
        tensors = load_file(folder / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    if edit_quant is not None:
        config = json.loads((folder / "config.json").read_text())
        edit_quant(config["quantization_config"])
        (folder / "config.json").write_text(json.dumps(config))


LAYER = "model.layers.1.self_attn.o_proj"


def _truncate(leaf, rows=None, cols=None):
    def edit(tensors):
        t = tensors[f"{LAYER}.{leaf}"]
        tensors[f"{LAYER}.{leaf}"] = t[:rows, :cols].contiguous() if t.dim() == 2 else t[:rows]
    return edit


# (method, edit of the tensors, error): a tensor disagreeing with qweight or the config
BAD_TENSORS = [
    ("awq", _truncate("scales", rows=2),
     rf"{LAYER}\.scales has shape \(2, 256\), expected \(4, 256\) for qweight \(256, 32\) "
     r"\(4 bits, group size 64\)"),
    ("awq", _truncate("qzeros", cols=16),
     rf"{LAYER}\.qzeros has shape \(4, 16\), expected \(4, 32\)"),
    ("gptq", _truncate("scales", cols=128),
     rf"{LAYER}\.scales has shape \(4, 128\), expected \(4, 256\) for qweight \(32, 256\) "
     r"\(4 bits, group size 64\)"),
    ("gptq", _truncate("g_idx", rows=100), rf"{LAYER}\.g_idx has shape \(100,\), expected \(256,\)"),
    ("gptq", _truncate("qweight", rows=16),
     rf"{LAYER}\.qzeros has shape \(4, 32\), expected \(2, 32\) for qweight \(16, 256\)"),
]
# (method, edit of quantization_config, error): a config we cannot serve
BAD_CONFIGS = [
    ("awq", lambda q: q.update(group_size=96), "group size 96 does not divide "
     "model.layers.0.mlp.down_proj's 512 inputs"),
    ("awq", lambda q: q.update(group_size=48), "AWQ group size 48 is not supported; supported: "
     "multiples of 32"),
    ("awq", lambda q: q.update(version="gemv"), "AWQ version 'gemv' is not supported; "
     "supported: gemm"),
    ("awq", lambda q: q.update(bits=8), "AWQ with 8 bits is not supported; supported: 4"),
    ("gptq", lambda q: q.update(bits=3), "GPTQ with 3 bits is not supported; supported: 4, 8"),
    ("gptq", lambda q: q.update(checkpoint_format="marlin"),
     "GPTQ checkpoint format 'marlin' is not supported; supported: gptq, gptq_v2"),
    ("gptq", lambda q: q.update(bits=8), r"down_proj\.qzeros has shape \(8, 32\), expected "
     r"\(4, 64\) for qweight \(64, 256\) \(8 bits"),
]


@pytest.mark.parametrize("method,edit_tensors,edit_quant,match",
                         [(m, e, None, x) for m, e, x in BAD_TENSORS]
                         + [(m, None, e, x) for m, e, x in BAD_CONFIGS])
def test_a_bad_checkpoint_is_named_at_load(method, edit_tensors, edit_quant, match, tmp_path,
                                          checkpoint):
    folder = _copy(checkpoint, method, tmp_path)
    _rewrite(folder, edit_tensors, edit_quant)
    with pytest.raises(ValueError, match=match):
        LLM(str(folder), dtype="float32", max_model_len=256)


def test_methods_are_checked_against_the_device_and_the_checkpoint():
    class Awq:
        quantization_config = {"quant_method": "awq", "bits": 4, "group_size": 128}
        name_or_path = "awq-model"

    class Dense:
        name_or_path = "dense-model"

    with pytest.raises(ValueError, match="'awq_marlin' runs Marlin kernels on CUDA GPUs and this "
                                         "engine runs on CPU; supported on CPU: awq, gptq, gguf "
                                         r"\(use 'awq'\)"):
        resolve_quantization("awq_marlin", False, Awq())
    with pytest.raises(ValueError, match=r"model config \(awq\) does not match .* \(gptq\)"):
        resolve_quantization("gptq", False, Awq())
    with pytest.raises(ValueError, match="'awq' needs a checkpoint quantized with it; "
                                         "dense-model has no quantization_config"):
        resolve_quantization("awq", False, Dense())

    class Fp8:
        quantization_config = {"quant_method": "fp8"}
    with pytest.raises(ValueError, match="quantized with 'fp8'.*supported: awq, gptq, gguf"):
        resolve_quantization(None, False, Fp8())
    assert resolve_quantization(None, False, Awq()) == "awq"
    assert resolve_quantization("AWQ", False, Awq()) == "awq"


def test_a_zero_bias_on_a_bias_free_layer_is_no_bias():
    from vllm.model_executor.layers.linear import Linear
    layer = Linear(64, 32)
    layer.load("bias", torch.zeros(32))  # GPTQ writers store these
    with pytest.raises(ValueError, match="has a bias this layer does not use"):
        layer.load("bias", torch.ones(32))


def test_act_order_shards_ordering_inputs_differently_are_served_dense():
    from vllm.model_executor.layers.linear import Linear
    from vllm.model_executor.layers.quantization.packing import QuantizedWeight
    g = torch.Generator().manual_seed(5)

    def shard(rows):
        return QuantizedWeight(torch.randint(0, 16, (rows, 64), generator=g, dtype=torch.uint8),
                               torch.rand(rows, 2, generator=g).half(),
                               torch.rand(rows, 2, generator=g).half(), 4, 32,
                               torch.randperm(64, generator=g))
    layer = Linear(64, {"gate": 48, "up": 48}, gate_up=True)
    gate, up = shard(48), shard(48)
    layer.load("weight", gate, "gate")
    layer.load("weight", up, "up")
    layer.process_weights_after_loading()
    assert not layer.quantized and layer.input_order is None
    want = torch.cat([gate.dequantize(), up.dequantize()])
    torch.testing.assert_close(layer.weight, want, rtol=0, atol=0)
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), x @ want.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_experts_stay_packed_and_compute_as_dequantized(dtype):
    # an AWQ/GPTQ MoE checkpoint's experts arrive as QuantizedWeight: packed
    # for quant_linear ([E, ...] uint8 stacks), no dense copy, and each
    # routed expert computes what its dequantized weight computes (x in int8)
    from vllm.model_executor.layers.fused_moe import fused_experts
    from vllm.model_executor.layers.fused_moe.layer import FusedMoE
    from vllm.model_executor.layers.quantization.packing import QuantizedWeight
    if not ops.quant_linear_available():
        pytest.skip("no quantized CPU kernel in the active variant")
    g = torch.Generator().manual_seed(9)
    e, k, n = 4, 64, 96

    def weight(rows, cols, bits):
        values = (torch.randint(0, 16, (rows, cols), generator=g, dtype=torch.uint8) if bits == 4
                  else torch.randint(-128, 128, (rows, cols), generator=g).to(torch.int8))
        return QuantizedWeight(values, (torch.rand(rows, cols // 32, generator=g) * 0.02).half(),
                               (torch.rand(rows, cols // 32, generator=g) * -0.1).half(), bits, 32)
    layer = FusedMoE(e, 2, k, n, dtype)
    parts = {}
    for expert in range(e):
        for shard, shape in (("w1", (n, k)), ("w3", (n, k)), ("w2", (k, n))):
            parts[expert, shard] = weight(*shape, 8 if shard == "w2" else 4)
            layer.load_expert(expert, shard, parts[expert, shard])
    assert layer.all_loaded()
    layer.process_weights_after_loading()
    assert layer.quantized and layer.w13_packed.dtype == torch.uint8 and layer.w13_packed.shape[0] == e
    assert layer.w13_weight.untyped_storage().nbytes() <= layer.w13_weight.element_size()
    w13 = torch.stack([torch.cat([parts[x, "w1"].dequantize(), parts[x, "w3"].dequantize()])
                       for x in range(e)])
    w2 = torch.stack([parts[x, "w2"].dequantize() for x in range(e)])
    x = torch.randn(9, k).to(dtype)
    logits = torch.randn(9, e)
    got = layer(x, logits)
    from vllm.model_executor.layers.fused_moe import fused_topk
    weights, ids, _ = fused_topk(x, logits, 2, True)
    want = fused_experts(x.float(), w13, w2, weights, ids)
    assert ((got.float() - want).norm() / want.norm()).item() < 0.02


def test_act_order_experts_are_dequantized_at_load():
    from vllm.model_executor.layers.fused_moe.layer import FusedMoE
    from vllm.model_executor.layers.quantization.packing import QuantizedWeight
    g = torch.Generator().manual_seed(9)

    def weight(rows, cols):
        return QuantizedWeight(torch.randint(0, 16, (rows, cols), generator=g, dtype=torch.uint8),
                               torch.rand(rows, cols // 32, generator=g).half(),
                               torch.rand(rows, cols // 32, generator=g).half(), 4, 32,
                               torch.randperm(cols, generator=g))
    layer = FusedMoE(2, 1, 64, 32, torch.float32)
    parts = {}
    for expert in range(2):
        for shard, shape in (("w1", (32, 64)), ("w3", (32, 64)), ("w2", (64, 32))):
            parts[expert, shard] = weight(*shape)
            layer.load_expert(expert, shard, parts[expert, shard])
    layer.process_weights_after_loading()
    assert not layer.quantized
    for expert in range(2):
        torch.testing.assert_close(layer.w13_weight[expert], torch.cat(
            [parts[expert, "w1"].dequantize(), parts[expert, "w3"].dequantize()]), rtol=0, atol=0)
        torch.testing.assert_close(layer.w2_weight[expert], parts[expert, "w2"].dequantize(),
                                   rtol=0, atol=0)


@needs_kernel
@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_quantized_mixtral_is_transformers_but_for_ties(method, tmp_path, smollm_tokenizer):
    # a tiny Mixtral whose attention and experts are quantized (the router
    # stays dense, modules_to_not_convert): experts packed for quant_linear
    import transformers

    from tests.engine.moe_checkpoints import save_random_moe
    from tests.engine.quant_checkpoints import quantize_saved_checkpoint
    dense, quantized = tmp_path / "dense", tmp_path / "quantized"
    save_random_moe("mixtral", dense, smollm_tokenizer)
    quantize_saved_checkpoint(dense, quantized, smollm_tokenizer, method)
    hf = transformers.AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
    llm = LLM(str(quantized), dtype="float32", max_model_len=256)
    model = llm.llm_engine.engine_core.worker.model
    experts = model.model.layers[0].block_sparse_moe.experts
    assert experts.quantized and experts.w13_packed.dtype == torch.uint8
    assert model.model.layers[0].self_attn.qkv_proj.quantized
    assert not model.model.layers[0].block_sparse_moe.gate.quantized
    generator = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, len(smollm_tokenizer), (n,), generator=generator).tolist()
               for n in (9, 30)]
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                           SamplingParams(temperature=0, max_tokens=10, ignore_eos=True),
                           use_tqdm=False)
    for prompt, output in zip(prompts, outputs):
        assert _ties_only(hf, prompt, list(output.outputs[0].token_ids)) == []


def test_disabling_the_cpu_kernel_serves_the_dequantized_weights(checkpoint, monkeypatch):
    # VLLM_DISABLED_KERNELS with vLLM's name for the CPU int4/int8 kernel:
    # the next one, the dense GEMM, on the weights the format defines
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", "MarlinLinearKernel,CPUWNA16LinearKernel")
    folder, hf = checkpoint("gptq4_act_order_g32")
    llm = LLM(str(folder), dtype="float32", max_model_len=256)
    ours, theirs = _linears(llm.llm_engine.engine_core.worker.model), _hf_weights(hf)
    for name, linear in ours.items():
        assert not linear.quantized and linear.input_order is None, name
        want = theirs[name].detach()
        assert (linear.weight - want).abs().max().item() <= 2 ** -11 * want.abs().max().item()
    # fp32 dense GEMMs on those weights: transformers' tokens exactly
    prompt = list(range(200, 230))
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                       use_tqdm=False)[0]
    ours_tokens = list(out.outputs[0].token_ids)
    with torch.no_grad():
        logits = hf(torch.tensor([prompt + ours_tokens])).logits[0, len(prompt) - 1:-1]
    assert _ties_only(hf, prompt, ours_tokens) == []
    assert sum(a == b for a, b in zip(ours_tokens, logits.argmax(-1).tolist())) >= 7
