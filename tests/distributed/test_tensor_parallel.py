"""Tensor parallelism (tensor_parallel_size=2: rank 0 in the engine core,
rank 1 a worker process) against one rank, on tiny random Llama-family
checkpoints written by transformers: greedy fp32 tokens equal, prompt
logprobs within 1e-4, seeded sampling equal; KV heads split or replicated;
the MoE families and DeepSeek (MLA heads, routed and shared experts);
shapes and settings it cannot split refused at load with a clear line; the
server with --tensor-parallel-size 2. Each engine runs in a fresh process
(rank 0 joins a process group and binds its threads)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.distributed.parallel_runs import (assert_same_generation, default_tokenizer,
                                             run_engine, save_random)
from tests.utils import clean_env


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


def two_ranks_load_error(folder) -> str:
    """stderr of LLM(folder, tensor_parallel_size=2) in a fresh process,
    which must fail."""
    code = ("from vllm import LLM\n"
            f"LLM({str(folder)!r}, dtype='float32', tensor_parallel_size=2)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert out.returncode != 0
    return out.stderr


# fresh engines in subprocesses take ~10 s a case: the variants beyond the
# first run in CI's slow step
@pytest.mark.parametrize("arch,kwargs", [
    ("llama", dict(num_key_value_heads=2)),  # KV heads split: one per rank
    pytest.param("llama", dict(num_key_value_heads=1),  # fewer KV heads than ranks
                 marks=pytest.mark.slow),
    pytest.param("qwen2", dict(num_key_value_heads=2),  # q/k/v biases, o without
                 marks=pytest.mark.slow),
], ids=["kv-split", "kv-replicated", "qwen2-biases"])
def test_two_ranks_match_one(tmp_path, tokenizer, arch, kwargs):
    names = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
             "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}[arch]
    save_random(tmp_path, tokenizer, *names, **kwargs)
    one, two = run_engine(tmp_path, tp=1), run_engine(tmp_path, tp=2)
    assert (one["heads"], two["heads"]) == (4, 2)  # query heads per rank
    assert_same_generation(one, two)


@pytest.mark.slow
@pytest.mark.parametrize("edit,message", [
    (dict(num_attention_heads=3, hidden_size=96),
     r"the number of attention heads \(3\) is not divisible by tensor_parallel_size 2"),
    (dict(intermediate_size=255), r"intermediate size \(255\) is not divisible"),
])
def test_shapes_that_do_not_split_are_refused(tmp_path, tokenizer, edit, message):
    save_random(tmp_path, tokenizer, "LlamaConfig", "LlamaForCausalLM",
          **{"num_key_value_heads": 1, **edit})
    stderr = two_ranks_load_error(tmp_path)
    assert "ValueError" in stderr and __import__("re").search(message, stderr), stderr[-2000:]


@pytest.mark.slow  # two engines each (~15 s): CI's slow step
@pytest.mark.parametrize("family", [
    "mixtral",  # the routed experts split by intermediate slices
    "qwen2_moe",  # plus a shared expert, q/k/v biases
    "qwen3_moe",  # per-head q/k norms
    "olmoe",  # q/k norms over every head's projection: gathered across ranks
])
def test_moe_models_split_their_experts(tmp_path, tokenizer, family):
    from tests.engine.moe_checkpoints import save_random_moe
    save_random_moe(family, tmp_path, tokenizer)
    assert_same_generation(run_engine(tmp_path), run_engine(tmp_path, tp=2))


@pytest.mark.slow
@pytest.mark.parametrize("arch", [
    "v2",  # MLA heads split, routed and shared experts split, no query LoRA
    "v3",  # query LoRA, sigmoid routing with its bias, YaRN
])
def test_deepseek_splits_its_heads_and_experts(tmp_path, tokenizer, arch):
    # (VLLM_MLA_DISABLE=1 splits as Llama's attention does: this rank's heads)
    from tests.engine.deepseek_checkpoints import save_random_deepseek
    save_random_deepseek(arch, tmp_path, tokenizer)
    one, two = run_engine(tmp_path), run_engine(tmp_path, tp=2)
    assert (one["heads"], two["heads"]) == (4, 2)
    assert_same_generation(one, two)


@pytest.mark.slow
def test_olmoe_with_kv_heads_fewer_than_ranks_is_refused(tmp_path, tokenizer):
    from tests.engine.moe_checkpoints import save_random_moe
    save_random_moe("olmoe", tmp_path, tokenizer, num_key_value_heads=1)
    stderr = two_ranks_load_error(tmp_path)
    assert "need the KV heads (1) to split evenly over tensor_parallel_size 2" in stderr, \
        stderr[-2000:]


def _quantized_mixtral_gguf(tmp_path, tokenizer) -> str:
    """A tiny Mixtral as llama.cpp writes it ("llama" GGUF), every
    projection quantized: q/k/v and o in Q8_0, the experts in Q4_0, the
    embedding and the LM head in Q8_0. Experts of 128 (64 a rank: whole
    32-input groups of the down projection)."""
    import gguf
    import numpy as np
    from gguf.quants import quantize
    from safetensors.numpy import load_file

    from tests.engine.moe_checkpoints import save_random_moe
    from tests.engine.test_gguf_moe import _llama_cpp_permute, write_gguf
    folder = tmp_path / "hf"
    hf_model = save_random_moe("mixtral", folder, tokenizer, intermediate_size=128,
                               tie_word_embeddings=False)
    state, config = load_file(folder / "model.safetensors"), hf_model.config
    q8, q4 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0
    raw = {"token_embd.weight": (quantize(state["model.embed_tokens.weight"], q8), q8),
           "output.weight": (quantize(state["lm_head.weight"], q8), q8)}
    for i in range(config.num_hidden_layers):
        attn = f"model.layers.{i}.self_attn."
        heads = {"q": config.num_attention_heads, "k": config.num_key_value_heads}
        for short, name in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"),
                            ("o", "attn_output")):
            value = state[f"{attn}{short}_proj.weight"]
            if short in heads:  # the converter's rotary permutation, then the blocks
                value = _llama_cpp_permute(value, heads[short])
            raw[f"blk.{i}.{name}.weight"] = (quantize(value, q8), q8)
        for gguf_name, leaf in zip(("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"),
                                   ("w1", "w3", "w2")):
            stack = np.stack([state[f"model.layers.{i}.block_sparse_moe.experts.{e}.{leaf}.weight"]
                              for e in range(config.num_local_experts)])
            raw[f"blk.{i}.{gguf_name}.weight"] = (quantize(stack, q4), q4)
    path = tmp_path / "model.gguf"
    write_gguf(hf_model, "mixtral", folder, path, raw)
    return str(path)


@pytest.mark.slow
# AWQ loads into the same QuantizedWeight as GPTQ: GPTQ stands for both
@pytest.mark.parametrize("kind", ["gguf", "gptq"])
def test_quantized_checkpoints_split_staying_quantized(tmp_path, tokenizer, kind):
    # a quantized weight splits by rows (column-parallel) or by whole groups
    # of inputs (row-parallel); the embedding and LM head by vocabulary rows,
    # still quantized
    from vllm import _custom_ops as ops
    if not ops.quant_linear_available():
        pytest.skip("no quantized CPU kernel in the active variant")
    if kind == "gguf":
        from vllm.transformers_utils.model_resolver import default_model_path
        model, tok = _quantized_mixtral_gguf(tmp_path, tokenizer), default_model_path()
    else:
        from tests.engine.quant_checkpoints import save_quantized_llama
        save_quantized_llama(tmp_path, tokenizer, kind, group_size=64)
        model, tok = str(tmp_path), None
    one, two = run_engine(model, tokenizer=tok), run_engine(model, tp=2, tokenizer=tok)
    assert (one["heads"], two["heads"]) == (4, 2)
    # Quantized layers round their inputs (to bf16 in a prompt's step, int8
    # in decode): the all-reduce's other summation order, ~1e-6, can flip
    # one rounding and move a later position's logprob by ~0.1 (measured:
    # 0.14 at most, most positions within 2e-5). Tokens stay equal.
    assert_same_generation(one, two, logprob_tolerance=0.3)


@pytest.mark.slow
def test_act_order_weights_cannot_split_their_inputs(tmp_path, tokenizer):
    from tests.engine.quant_checkpoints import save_quantized_llama
    save_quantized_llama(tmp_path, tokenizer, "gptq", group_size=64, desc_act=True)
    stderr = two_ranks_load_error(tmp_path)
    assert "act-order (desc_act) quantized weight cannot split its inputs" in stderr, \
        stderr[-2000:]


@pytest.mark.slow  # a server and a worker process; CI's slow step runs it
def test_served_with_two_ranks_equals_offline(tmp_path, tokenizer):
    from tests.entrypoints.server import RemoteServer
    save_random(tmp_path, tokenizer, "LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2)
    offline = run_engine(tmp_path)["greedy"][0]
    server = RemoteServer([str(tmp_path), "--dtype", "float32", "--tensor-parallel-size", "2"])
    try:
        completion = server.client().completions.create(
            model=str(tmp_path), prompt=list(range(5, 12)), max_tokens=10, temperature=0,
            extra_body={"ignore_eos": True, "skip_special_tokens": False})
        assert completion.choices[0].text == tokenizer.decode(offline)
    finally:
        server.stop()


def test_a_dead_worker_fails_the_next_step_at_once(tmp_path, tokenizer):
    save_random(tmp_path, tokenizer, "LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2)
    code = f"""
import os, signal, time
from vllm import LLM, SamplingParams
llm = LLM({str(tmp_path)!r}, dtype="float32", tensor_parallel_size=2)
params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
llm.generate({{"prompt_token_ids": [1, 2, 3]}}, params, use_tqdm=False)
worker = llm.llm_engine.engine_core.worker.processes[0]
os.kill(worker.pid, signal.SIGKILL)
worker.join()
start = time.monotonic()
try:
    llm.generate({{"prompt_token_ids": [1, 2, 3]}}, params, use_tqdm=False)
except RuntimeError as exc:
    print("FAILED_IN", time.monotonic() - start, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"))
    line = next((line for line in out.stdout.splitlines() if line.startswith("FAILED_IN")), None)
    assert line is not None, out.stderr[-3000:]
    assert float(line.split()[1]) < 5
    assert "worker rank 1 (exit code -9) died" in line
