"""Tiny random-initialised Llama checkpoints quantized the way AutoAWQ and
AutoGPTQ write them, by packers written here from the formats' definitions
(not from the engine's code):

AWQ (GEMM): qweight int32 [k, n/8], word c of row i holding columns
8c + (0, 2, 4, 6, 1, 3, 5, 7)[t] in nibble t; qzeros int32 [k/g, n/8]
packed the same way; scales fp16 [k/g, n]; w = s (q - z).
GPTQ: qweight int32 [k b/32, n], word r of column j holding inputs
r (32/b) + t in bits [t b, (t+1) b); qzeros int32 [groups, n b/32], packed
along n the same way, storing z - 1 in v1 checkpoints; scales fp16
[groups, n]; g_idx int32 [k]; w = s (q - z) with the input's group.

Each writer also returns transformers' model holding the dequantized
weights in fp32, the reference the engine is compared with."""
from __future__ import annotations

import json

import numpy as np
import torch

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
SHARED_INPUT = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up",
                "up_proj": "gate_up"}


def random_llama(tokenizer, seed: int = 0, hidden: int = 256, intermediate: int = 512):
    """fp32 transformers Llama whose weights move the logits decisively."""
    import transformers
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                                      intermediate_size=intermediate, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=512, tie_word_embeddings=False)
    config.pad_token_id = None
    config.bos_token_id = config.eos_token_id = None
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.7, 1.3)
            elif "layers" in name:
                param.normal_(std=0.08)
            else:
                param.normal_(std=0.5)  # embeddings and head: peaked logits
    return model


def quantize_groups(w: torch.Tensor, group_of_input: torch.Tensor, bits: int, sym: bool,
                    min_zero: int = 0):
    """Round-to-nearest per (output row, group): q [n, k] ints in
    [0, 2^bits), scales [n, groups] fp16, zeros [n, groups] ints."""
    n, k = w.shape
    groups = int(group_of_input.max()) + 1
    top = 2 ** bits - 1
    q = torch.empty(n, k, dtype=torch.int64)
    scales = torch.empty(n, groups, dtype=torch.float16)
    zeros = torch.empty(n, groups, dtype=torch.int64)
    for g in range(groups):
        members = (group_of_input == g).nonzero().flatten()
        part = w[:, members]
        if sym:
            s = part.abs().amax(1) / (2 ** (bits - 1) - 1)
            z = torch.full((n,), 2 ** (bits - 1), dtype=torch.int64)
        else:
            lo, hi = part.amin(1).clamp(max=0), part.amax(1).clamp(min=0)
            s = (hi - lo) / top
            z = (-lo / s).round().long().clamp(min_zero, top)
        s16 = s.to(torch.float16)
        q[:, members] = (part / s16.float().unsqueeze(1) + z.unsqueeze(1)).round().long().clamp(0, top)
        scales[:, g], zeros[:, g] = s16, z
    return q, scales, zeros


def dequantize(q, scales, zeros, group_of_input) -> torch.Tensor:
    return (q - zeros[:, group_of_input]).float() * scales[:, group_of_input].float()


def _words(values: np.ndarray, bits: int) -> np.ndarray:
    """[..., 32/bits] unsigned values -> [...] int32 words, value t at bits t*bits."""
    words = np.zeros(values.shape[:-1], dtype=np.uint64)
    for t in range(values.shape[-1]):
        words |= values[..., t].astype(np.uint64) << np.uint64(t * bits)
    return words.astype(np.uint32).view(np.int32)


def awq_tensors(q, scales, zeros) -> dict[str, torch.Tensor]:
    """AWQ GEMM tensors of a layer quantized as q [n, k] etc."""
    qt, zt = q.t().numpy(), zeros.t().numpy()  # [k, n], [groups, n]

    def pack(m):
        rows = m.shape[0]
        by_word = m.reshape(rows, -1, 8)[..., list(AWQ_ORDER)]  # nibble t: column ORDER[t]
        return torch.from_numpy(_words(by_word, 4).copy())
    return {"qweight": pack(qt), "qzeros": pack(zt),
            "scales": scales.t().contiguous()}


def gptq_tensors(q, scales, zeros, group_of_input, bits: int, v1: bool) -> dict[str, torch.Tensor]:
    per_word = 32 // bits
    qt = q.t().numpy()  # [k, n]
    k, n = qt.shape
    qweight = _words(qt.reshape(k // per_word, per_word, n).transpose(0, 2, 1), bits)
    stored = zeros.t().numpy() - (1 if v1 else 0)  # [groups, n]
    qzeros = _words(stored.reshape(stored.shape[0], n // per_word, per_word), bits)
    return {"qweight": torch.from_numpy(qweight.copy()), "qzeros": torch.from_numpy(qzeros.copy()),
            "scales": scales.t().contiguous(),
            "g_idx": group_of_input.to(torch.int32)}


def save_quantized_llama(folder, tokenizer, method: str, bits: int = 4, group_size: int = 64,
                         sym: bool = False, desc_act: bool = False, v1: bool = True,
                         seed: int = 0, skip: tuple[str, ...] = ()):
    """Writes an AWQ or GPTQ checkpoint of a random Llama (layers named in
    `skip` stay dense, listed in modules_to_not_convert) to `folder`;
    returns transformers' fp32 model with the dequantized weights."""
    return quantize_llama(random_llama(tokenizer, seed), folder, tokenizer, method, bits,
                          group_size, sym, desc_act, v1, seed, skip)


def quantize_llama(model, folder, tokenizer, method: str, bits: int = 4, group_size: int = 64,
                   sym: bool = False, desc_act: bool = False, v1: bool = True, seed: int = 0,
                   skip: tuple[str, ...] = ()):
    """save_quantized_llama for a given fp32 transformers Llama (its
    projections replaced in place by their dequantized values)."""
    from safetensors.torch import save_file
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the embedding's own tensor
    generator = torch.Generator().manual_seed(seed + 1)
    for layer_index, layer in enumerate(model.model.layers):
        perms = {}  # act-order: projections of one input share its order (GPTQ's is by
        # the input's Hessian)
        for proj_name in LINEARS:
            parent = "self_attn" if proj_name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) \
                else "mlp"
            prefix = f"model.layers.{layer_index}.{parent}.{proj_name}"
            if proj_name in skip:
                continue
            w = state.pop(f"{prefix}.weight")
            k = w.shape[1]
            g = k if group_size == -1 else group_size
            if desc_act:  # act-order: group i // g of a permutation of the inputs
                shared = SHARED_INPUT.get(proj_name, proj_name)
                perm = perms.setdefault(shared, torch.randperm(k, generator=generator))
                group_of_input = torch.empty(k, dtype=torch.int64)
                group_of_input[perm] = torch.arange(k) // g
            else:
                group_of_input = torch.arange(k) // g
            q, scales, zeros = quantize_groups(w, group_of_input, bits, sym,
                                               min_zero=1 if v1 and method == "gptq" else 0)
            dense = dequantize(q, scales, zeros, group_of_input)
            getattr(getattr(layer, parent), proj_name).weight.data.copy_(dense)
            tensors = (awq_tensors(q, scales, zeros) if method == "awq"
                       else gptq_tensors(q, scales, zeros, group_of_input, bits, v1))
            state.update({f"{prefix}.{leaf}": t for leaf, t in tensors.items()})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    if method == "awq":
        quant = {"quant_method": "awq", "bits": bits, "group_size": group_size,
                 "zero_point": True, "version": "gemm"}
    else:
        quant = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "sym": sym,
                 "desc_act": desc_act, "checkpoint_format": "gptq" if v1 else "gptq_v2"}
    quant["modules_to_not_convert"] = list(skip) or None
    config["quantization_config"] = quant
    config["torch_dtype"] = "float16"
    config["architectures"] = ["LlamaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return model


def quantize_saved_checkpoint(dense, quantized, tokenizer, method: str, group_size: int = 32,
                              dense_leaves: tuple[str, ...] = ("gate",)):
    """Rewrites the transformers checkpoint in folder `dense` with every
    2-D projection weight of its layers replaced by its quantized-then-
    dequantized value (the reference transformers then loads), and writes
    the AWQ or GPTQ (v1, 4-bit) form to folder `quantized`. Modules named
    in `dense_leaves` (e.g. a MoE router, `gate`) stay dense and are listed
    in modules_to_not_convert."""
    from safetensors.torch import load_file, save_file
    state = load_file(str(dense / "model.safetensors"))
    quant_state = {}
    for name, w in state.items():
        module = name.rsplit(".", 1)[0]
        if (not name.startswith("model.layers.") or not name.endswith(".weight") or w.dim() != 2
                or module.rsplit(".", 1)[-1] in dense_leaves):
            quant_state[name] = w
            continue
        group_of_input = torch.arange(w.shape[1]) // group_size
        q, scales, zeros = quantize_groups(w.float(), group_of_input, 4, False,
                                           min_zero=1 if method == "gptq" else 0)
        state[name] = dequantize(q, scales, zeros, group_of_input).to(w.dtype)
        tensors = (awq_tensors(q, scales, zeros) if method == "awq"
                   else gptq_tensors(q, scales, zeros, group_of_input, 4, v1=True))
        quant_state.update({f"{module}.{leaf}": t for leaf, t in tensors.items()})
    save_file(state, str(dense / "model.safetensors"), metadata={"format": "pt"})
    quantized.mkdir(exist_ok=True)
    save_file(quant_state, str(quantized / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((dense / "config.json").read_text())
    quant = ({"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
              "version": "gemm"} if method == "awq" else
             {"quant_method": "gptq", "bits": 4, "group_size": group_size, "sym": False,
              "desc_act": False, "checkpoint_format": "gptq"})
    config["quantization_config"] = {**quant, "modules_to_not_convert": list(dense_leaves)}
    (quantized / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(quantized)
