"""What dense models have, on a MoE model (a tiny Qwen2-MoE written by
transformers: dense and sparse layers, a shared expert): the bf16 packed
experts on each CPU kernel variant that has them, prefix caching,
preemption, dummy weights, the server; and checkpoints that cannot load
get an error naming the tensor before any step runs."""
from __future__ import annotations

import pytest
import torch

from tests.engine.hf_reference import prompt_logprob_gap
from tests.engine.moe_checkpoints import save_random_moe
from tests.kernels.isa import packed_isa  # noqa: F401
from vllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


@pytest.fixture(scope="module")
def tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("qwen2_moe")
    return folder, save_random_moe("qwen2_moe", folder, tokenizer, seed=3)


def _prompts(vocab: int, count: int = 5, shared_prefix: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(5)
    prefix = torch.randint(0, vocab, (shared_prefix,), generator=generator).tolist()
    return [{"prompt_token_ids": prefix + torch.randint(0, vocab, (8 + 5 * i,),
                                                        generator=generator).tolist()}
            for i in range(count)]


def _tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


@pytest.fixture(scope="module")
def fp32_alone(checkpoint, tokenizer):
    llm = LLM(str(checkpoint[0]), dtype="float32", enable_prefix_caching=False)
    return [_tokens(llm.generate(p, GREEDY, use_tqdm=False))[0]
            for p in _prompts(len(tokenizer), shared_prefix=40)]


def test_bf16_packed_experts_track_fp32_transformers(packed_isa, checkpoint, tokenizer):
    folder, hf_model = checkpoint
    llm = LLM(str(folder), dtype="bfloat16")
    experts = llm.llm_engine.engine_core.worker.model.model.layers[1].mlp.experts
    assert experts.w13_packed is not None  # the packed path, not a fallback
    gap = prompt_logprob_gap(llm, hf_model, _prompts(len(tokenizer), 1)[0]["prompt_token_ids"])
    # bf16 weights and activations against fp32: ~0.005 here; experts
    # weighted 0.8x instead of 1x move it to ~0.05
    assert gap < 0.025, gap


def test_prefix_cache_and_batching_keep_outputs(checkpoint, tokenizer, fp32_alone):
    llm = LLM(str(checkpoint[0]), dtype="float32")
    prompts = _prompts(len(tokenizer), shared_prefix=40)
    assert _tokens(llm.generate(prompts, GREEDY, use_tqdm=False)) == fp32_alone
    before = llm.llm_engine.get_stats().prefix_cache_hits
    assert _tokens(llm.generate(prompts, GREEDY, use_tqdm=False)) == fp32_alone
    assert llm.llm_engine.get_stats().prefix_cache_hits > before


def test_preemption_keeps_outputs(checkpoint, tokenizer, fp32_alone):
    llm = LLM(str(checkpoint[0]), dtype="float32", block_size=16, num_gpu_blocks_override=8,
              max_model_len=128, max_num_batched_tokens=32)
    outputs = llm.generate(_prompts(len(tokenizer), shared_prefix=40), GREEDY, use_tqdm=False)
    assert llm.llm_engine.get_stats().num_preemptions > 0
    assert _tokens(outputs) == fp32_alone


def test_dummy_weights_load_and_run(checkpoint):
    llm = LLM(str(checkpoint[0]), dtype="bfloat16", load_format="dummy")
    out = llm.generate({"prompt_token_ids": [1, 2, 3]}, GREEDY, use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 10


def test_served_completion_equals_offline(checkpoint, tokenizer, fp32_alone):
    from tests.entrypoints.server import RemoteServer
    server = RemoteServer([str(checkpoint[0]), "--dtype", "float32"])
    try:
        prompt = _prompts(len(tokenizer), shared_prefix=40)[0]["prompt_token_ids"]
        completion = server.client().completions.create(
            model=str(checkpoint[0]), prompt=prompt, max_tokens=10, temperature=0,
            extra_body={"ignore_eos": True, "return_token_ids": True})
        text = tokenizer.decode(fp32_alone[0])
        assert completion.choices[0].text == text
    finally:
        server.stop()


def _edit_checkpoint(folder, edit):
    from safetensors.torch import load_file, save_file
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_expert_is_named(tmp_path, tokenizer):
    save_random_moe("mixtral", tmp_path, tokenizer)
    _edit_checkpoint(tmp_path, lambda t: t.pop("model.layers.1.block_sparse_moe.experts.5.w2.weight"))
    with pytest.raises(ValueError, match=r"lacks expert weights: "
                       r"model\.layers\.1\.block_sparse_moe\.experts\.5\.w2\.weight"):
        LLM(str(tmp_path), dtype="float32")


def test_expert_of_the_wrong_shape_is_named(tmp_path, tokenizer):
    save_random_moe("olmoe", tmp_path, tokenizer)
    name = "model.layers.0.mlp.experts.2.up_proj.weight"
    _edit_checkpoint(tmp_path, lambda t: t.__setitem__(name, t[name][:, :100].contiguous()))
    with pytest.raises(ValueError, match=rf"checkpoint {name} has shape \(64, 100\), "
                       r"expected \(64, 128\)"):
        LLM(str(tmp_path), dtype="float32")


def test_top_k_above_the_experts_fails_at_load(tmp_path, tokenizer):
    import json
    save_random_moe("olmoe", tmp_path, tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_experts_per_tok"] = 7
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"top-k 7 must lie in \[1, 6\]"):
        LLM(str(tmp_path), dtype="float32")
