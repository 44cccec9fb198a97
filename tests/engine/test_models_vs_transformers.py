"""Small random-initialised Llama, Mistral and Qwen2 checkpoints saved with
transformers: our logprobs at every prompt position equal log_softmax of
transformers' logits (fp32, 1e-4), whether the prompt runs in one chunk,
in several chunks, or token by token."""
from __future__ import annotations

import pytest
import torch

from vllm import LLM, SamplingParams

ARCHS = {
    "llama": dict(attention_bias=False, rope_theta=10000.0),
    "mistral": dict(sliding_window=4096, rope_theta=1e6),
    "qwen2": dict(rope_theta=1e6),
}


def _save_random_model(arch: str, folder, tokenizer, max_shard_size="5GB"):
    import transformers
    config_cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
                  "qwen2": transformers.Qwen2Config}[arch]
    model_cls = {"llama": transformers.LlamaForCausalLM,
                 "mistral": transformers.MistralForCausalLM,
                 "qwen2": transformers.Qwen2ForCausalLM}[arch]
    config = config_cls(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=512, tie_word_embeddings=(arch == "qwen2"),
                        **ARCHS[arch])
    torch.manual_seed(hash(arch) % 1000)
    model = model_cls(config).to(torch.float32)
    if arch == "qwen2":  # make the q/k/v biases matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("chunking", ["one_chunk", "chunks_of_7", "token_by_token"])
def test_prompt_and_next_token_logprobs_match(arch, chunking, tmp_path, smollm_tokenizer):
    hf_model = _save_random_model(arch, tmp_path, smollm_tokenizer)
    budget = {"one_chunk": None, "chunks_of_7": 7, "token_by_token": 1}[chunking]
    llm = LLM(str(tmp_path), dtype="float32", max_num_batched_tokens=budget,
              enable_prefix_caching=False)
    generator = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, len(smollm_tokenizer), (29,), generator=generator).tolist()
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=1, logprobs=3,
                                      prompt_logprobs=3), use_tqdm=False)[0]
    with torch.no_grad():
        expected = hf_model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)

    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
    for pos in range(1, len(prompt)):
        got = out.prompt_logprobs[pos]
        row = expected[pos - 1]
        assert got[prompt[pos]].logprob == pytest.approx(float(row[prompt[pos]]), abs=1e-4)
        top = row.topk(3)
        for token, value in zip(top.indices.tolist(), top.values.tolist()):
            assert got[token].logprob == pytest.approx(value, abs=1e-4)
    completion = out.outputs[0]
    assert completion.token_ids == [int(expected[-1].argmax())]
    next_token = completion.token_ids[0]
    assert completion.logprobs[0][next_token].logprob == pytest.approx(
        float(expected[-1, next_token]), abs=1e-4)
    assert completion.logprobs[0][next_token].rank == 1


def test_sharded_safetensors_load_the_same_weights(tmp_path, smollm_tokenizer):
    hf_model = _save_random_model("llama", tmp_path, smollm_tokenizer, max_shard_size="8MB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    llm = LLM(str(tmp_path), dtype="float32")
    ours = llm.llm_engine.engine_core.worker.model
    theirs = hf_model.state_dict()
    layer = ours.model.layers[1]
    q, k, v = layer.self_attn.qkv_proj.weight.split([256, 128, 128])
    torch.testing.assert_close(q, theirs["model.layers.1.self_attn.q_proj.weight"], rtol=0, atol=0)
    torch.testing.assert_close(v, theirs["model.layers.1.self_attn.v_proj.weight"], rtol=0, atol=0)
    torch.testing.assert_close(ours.lm_head.weight, theirs["lm_head.weight"], rtol=0, atol=0)


def test_checkpoint_missing_a_weight_is_an_error(tmp_path, smollm_tokenizer):
    from safetensors.torch import load_file, save_file
    _save_random_model("llama", tmp_path, smollm_tokenizer)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.0.mlp.down_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks weights: model.layers.0.mlp.down_proj.weight"):
        LLM(str(tmp_path), dtype="float32")
