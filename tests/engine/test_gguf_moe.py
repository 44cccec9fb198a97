"""MoE checkpoints in GGUF, the layout llama.cpp's converter writes
(stacked experts blk.N.ffn_{gate,up,down}_exps, the router ffn_gate_inp,
Qwen2-MoE's shared expert *_shexp, q/k norms; Mixtral as a "llama" file
with experts and the rotary-permuted q/k), written here with the gguf
package from tiny transformers models: our fp32 logprobs equal
transformers' on the same weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine.moe_checkpoints import save_random_moe
from vllm import LLM, SamplingParams

GGUF_ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe",
             "olmoe": "olmoe"}


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter interleaves each q/k head's rotary halves."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_gguf(hf_model, arch: str, folder, path, raw: dict | None = None) -> None:
    """The checkpoint transformers saved in `folder`, as a GGUF file;
    `raw`: GGUF tensor name -> (block bytes, GGMLQuantizationType) written
    in place of the float tensor."""
    import gguf
    from safetensors.numpy import load_file
    config = hf_model.config
    name = GGUF_ARCH[arch]
    writer = gguf.GGUFWriter(str(path), name)
    add_tensor = writer.add_tensor

    def add(tensor_name, value):
        if raw and tensor_name in raw:
            data, qtype = raw[tensor_name]
            add_tensor(tensor_name, data, raw_dtype=qtype)
        else:
            add_tensor(tensor_name, value)
    writer.add_tensor = add
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    experts = getattr(config, "num_local_experts", None) or config.num_experts
    expert_size = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"]
                              if hasattr(config, "rope_parameters") else config.rope_theta)
    writer.add_vocab_size(config.vocab_size)
    writer.add_expert_count(experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_feed_forward_length(expert_size)
    if arch == "qwen2_moe":
        writer.add_expert_shared_feed_forward_length(config.shared_expert_intermediate_size)
    state = load_file(folder / "model.safetensors")
    moe = "block_sparse_moe" if arch == "mixtral" else "mlp"
    leaves = ("w1", "w3", "w2") if arch == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if "lm_head.weight" in state and not config.tie_word_embeddings:
        writer.add_tensor("output.weight", state["lm_head.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        attn = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj",
                "attn_output": "o_proj", "attn_q_norm": "q_norm", "attn_k_norm": "k_norm"}
        for gguf_name, hf_name in attn.items():
            for leaf in ("weight", "bias"):
                key = f"{p}self_attn.{hf_name}.{leaf}"
                if key not in state:
                    continue
                value = state[key]
                if name == "llama" and gguf_name in ("attn_q", "attn_k"):
                    value = _llama_cpp_permute(value, heads if gguf_name == "attn_q" else kv_heads)
                writer.add_tensor(f"blk.{i}.{gguf_name}.{leaf}", value)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[f"{p}input_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[f"{p}post_attention_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate_inp.weight", state[f"{p}{moe}.gate.weight"])
        for gguf_name, leaf in zip(("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"), leaves):
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", np.stack(
                [state[f"{p}{moe}.experts.{e}.{leaf}.weight"] for e in range(experts)]))
        if arch == "qwen2_moe":
            for proj in ("gate", "up", "down"):
                writer.add_tensor(f"blk.{i}.ffn_{proj}_shexp.weight",
                                  state[f"{p}mlp.shared_expert.{proj}_proj.weight"])
            writer.add_tensor(f"blk.{i}.ffn_gate_inp_shexp.weight",
                              state[f"{p}mlp.shared_expert_gate.weight"].reshape(-1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def prompt_logprob_pairs(llm, hf_model, tokenizer):
    """(position, our logprob, transformers' fp32 logprob) of each token of
    a random 19-token prompt."""
    prompt = torch.randint(0, len(tokenizer), (19,),
                           generator=torch.Generator().manual_seed(4)).tolist()
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1),
                       use_tqdm=False)[0]
    with torch.no_grad():
        expected = hf_model(torch.tensor([prompt])).logits[0].log_softmax(-1)
    return [(pos, out.prompt_logprobs[pos][prompt[pos]].logprob,
             float(expected[pos - 1, prompt[pos]])) for pos in range(1, len(prompt))]


@pytest.fixture(scope="module")
def tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


# every layer sparse: GGUF files have no dense layers among MoE ones
OVERRIDES = {"qwen2_moe": dict(mlp_only_layers=[]), "qwen3_moe": {}, "mixtral": {}, "olmoe": {}}


@pytest.mark.parametrize("arch", list(GGUF_ARCH))
def test_gguf_moe_matches_transformers(arch, tmp_path, tokenizer):
    from vllm.transformers_utils.model_resolver import default_model_path
    overrides = dict(OVERRIDES[arch], tie_word_embeddings=False)
    if arch == "olmoe":
        overrides["clip_qkv"] = None  # GGUF has no clip key
    hf_model = save_random_moe(arch, tmp_path / "hf", tokenizer, seed=2, **overrides)
    write_gguf(hf_model, arch, tmp_path / "hf", tmp_path / "model.gguf")
    llm = LLM(str(tmp_path / "model.gguf"), tokenizer=default_model_path(), dtype="float32")
    assert type(llm.llm_engine.engine_core.worker.model).__name__ == \
        type(hf_model).__name__
    for pos, ours, theirs in prompt_logprob_pairs(llm, hf_model, tokenizer):
        assert ours == pytest.approx(theirs, abs=1e-4), (arch, pos)


def test_quantized_expert_stacks_stay_quantized(tmp_path, tokenizer):
    # llama.cpp's Q4_0 expert stacks: one QuantizedWeight per expert, packed
    # for quant_linear, computing what the dequantized weights compute
    import gguf
    from gguf.quants import dequantize, quantize
    from safetensors.torch import load_file, save_file
    import transformers

    from vllm import _custom_ops as ops
    from vllm.transformers_utils.model_resolver import default_model_path
    if not ops.quant_linear_available():
        pytest.skip("no quantized CPU kernel in the active variant")
    folder = tmp_path / "hf"
    save_random_moe("mixtral", folder, tokenizer, seed=2, tie_word_embeddings=False)
    state = load_file(folder / "model.safetensors")
    qtype = gguf.GGMLQuantizationType.Q4_0
    raw = {}
    config = transformers.AutoConfig.from_pretrained(folder)
    for i in range(config.num_hidden_layers):
        for gguf_name, leaf in zip(("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"),
                                   ("w1", "w3", "w2")):
            names = [f"model.layers.{i}.block_sparse_moe.experts.{e}.{leaf}.weight"
                     for e in range(config.num_local_experts)]
            blocks = quantize(np.stack([state[n].numpy() for n in names]), qtype)
            raw[f"blk.{i}.{gguf_name}.weight"] = (blocks, qtype)
            dense = torch.from_numpy(dequantize(blocks, qtype).astype(np.float32))
            for expert, n in enumerate(names):
                state[n] = dense[expert].contiguous()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    write_gguf(hf_model.eval(), "mixtral", folder, tmp_path / "model.gguf", raw)
    llm = LLM(str(tmp_path / "model.gguf"), tokenizer=default_model_path(), dtype="float32")
    experts = llm.llm_engine.engine_core.worker.model.model.layers[0].block_sparse_moe.experts
    assert experts.quantized and experts.w13_packed.dtype == torch.uint8
    # x goes through int8 per 32 values in the experts: logprobs within a
    # few hundredths (a wrong expert or half moves them by whole units)
    errors = [abs(ours - theirs) for _, ours, theirs in
              prompt_logprob_pairs(llm, hf_model, tokenizer)]
    assert max(errors) < 0.05, errors
