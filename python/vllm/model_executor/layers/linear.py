"""Linear layers whose weights may arrive in shards (q/k/v, gate/up) and are
stored fused, so one GEMM serves several projections."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from vllm import _custom_ops as ops
from vllm import hugepages
from vllm.forward_context import get_attn_metadata_or_none
from vllm.model_executor.layers.quantization.packing import (QuantizedWeight, concat_rows,
                                                             pack_quantized)

logger = logging.getLogger(__name__)

_HAS_SMALL_M = hasattr(torch.ops._C, "small_m_linear") if ops._C is not None else False
# oneDNN bf16 GEMMs on a prepacked weight: needs torch built with oneDNN and
# a CPU with native bf16 dot products (else oneDNN emulates bf16 slowly).
_PACKED_ONEDNN = (torch.backends.mkldnn.is_available()
                  and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                  and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class Linear(nn.Module):
    """y = x W^T (+ b), W stored [out, in]. `shard_sizes` names the row
    blocks of a fused weight, in order (e.g. {"q": 576, "k": 192, "v": 192})."""

    def __init__(self, in_features: int, shard_sizes: dict[str, int] | int, bias: bool = False,
                 dtype: torch.dtype = torch.float32, gate_up: bool = False) -> None:
        """`gate_up`: the weight is [W_gate; W_up] of a gated MLP (two equal
        shards) whose caller applies the activation through
        `vllm.model_executor.layers.activation.gate_up_activation`; its
        packed copy may then interleave the two (pack_gate_up_pairs)."""
        super().__init__()
        if isinstance(shard_sizes, int):
            shard_sizes = {"": shard_sizes}
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for shard, size in shard_sizes.items():
            self.shard_offsets[shard] = (offset, size)
            offset += size
        self.in_features, self.out_features = in_features, offset
        self.weight = nn.Parameter(torch.empty(offset, in_features, dtype=dtype),
                                   requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(offset, dtype=dtype), requires_grad=False)
                     if bias else None)
        if gate_up and (len(shard_sizes) != 2 or len(set(shard_sizes.values())) != 1):
            raise ValueError(f"a gate/up projection has two equal shards, got {shard_sizes}")
        self.gate_up = gate_up
        # the copy the GEMM reads: ours or oneDNN's (see pack_weight), or a
        # quantized weight's packing (uint8, see load)
        self.packed_weight: torch.Tensor | None = None
        self._quantized_shards: dict[str, QuantizedWeight] = {}
        # a quantized weight whose inputs are reordered (GPTQ act-order):
        # the layer multiplies x[..., input_order]
        self.input_order: torch.Tensor | None = None

    @property
    def quantized(self) -> bool:
        return is_quant_packed(self.packed_weight)

    def load(self, name: str, loaded: torch.Tensor | QuantizedWeight, shard: str = "") -> None:
        """Copy a checkpoint tensor ("weight" or "bias") into its row block.
        A QuantizedWeight stays quantized: once every shard has come, they
        are packed for quant_linear together and the dense weight's memory
        is released (`weight` keeps its shape, no storage)."""
        if isinstance(loaded, QuantizedWeight):
            self._load_quantized(name, loaded, shard)
            return
        if name == "weight" and self.quantized:
            raise ValueError(f"checkpoint weight of shard {shard!r} comes again, dense, after "
                             "the layer's quantized weight")
        param = self.weight if name == "weight" else self.bias
        if param is None and name == "bias" and not loaded.any():
            return  # a zero bias (GPTQ files store one for bias-free layers) is no bias
        if param is None:
            raise ValueError(f"checkpoint has a {name} this layer does not use")
        start, size = self.shard_offsets[shard]
        expected = (size,) + tuple(param.shape[1:])
        if tuple(loaded.shape) != expected:
            raise ValueError(f"checkpoint {name} of shard {shard!r} has shape "
                             f"{tuple(loaded.shape)}, expected {expected}")
        param.data[start:start + size].copy_(loaded)

    def _load_quantized(self, name: str, loaded: QuantizedWeight, shard: str) -> None:
        start, size = self.shard_offsets[shard]
        if name != "weight":
            raise ValueError(f"checkpoint {name} of shard {shard!r} is quantized; only weights "
                             "may be")
        if loaded.shape != (size, self.in_features):
            raise ValueError(f"checkpoint weight of shard {shard!r} has shape {loaded.shape}, "
                             f"expected {(size, self.in_features)}")
        self._quantized_shards[shard] = loaded
        if len(self._quantized_shards) < len(self.shard_offsets):
            return
        shards = [self._quantized_shards[s] for s in self.shard_offsets]
        self._quantized_shards = {}
        try:
            whole = concat_rows(shards)
        except ValueError:  # act-order shards ordering their inputs differently
            whole = None
        if whole is not None and ops.quant_linear_available():
            self.packed_weight = pack_quantized(whole)
            self.input_order = whole.input_order
            self.weight.data = shape_only(self.weight)
            return
        # no quantized kernel in the active variant, or shards that cannot
        # share one packing: dense, as any checkpoint
        if whole is None:
            logger.warning("a fused projection's quantized shards order their inputs "
                           "differently: dequantized at load")
        self.weight.data.copy_(torch.cat([p.dequantize(self.weight.dtype) for p in shards]))

    def process_weights_after_loading(self) -> None:
        if self._quantized_shards:
            # some shards quantized, others dense (a GGUF mixing types in one
            # fused projection): the quantized ones are dequantized into the
            # dense weight, which the dense path then serves
            logger.warning("a fused projection mixes quantized shards (%s) with dense ones: "
                           "dequantized at load", ", ".join(self._quantized_shards))
            for shard, part in self._quantized_shards.items():
                start, size = self.shard_offsets[shard]
                self.weight.data[start:start + size].copy_(part.dequantize(self.weight.dtype))
            self._quantized_shards = {}
        if not self.quantized:
            self.packed_weight = pack_weight(self.weight, self.gate_up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_linear(self.ordered_input(x), self.weight, self.bias, self.packed_weight)

    def ordered_input(self, x: torch.Tensor) -> torch.Tensor:
        """x as the weight's columns are ordered (see input_order)."""
        return x if self.input_order is None else x.index_select(-1, self.input_order)


def shape_only(weight: torch.Tensor) -> torch.Tensor:
    """A tensor of weight's shape and dtype with no storage of its own (one
    element, expanded): what a quantized layer keeps as `weight`, so code
    that reads the layer's shape still can."""
    return torch.zeros((), dtype=weight.dtype, device=weight.device).expand(weight.shape)


def is_quant_packed(packed: torch.Tensor | None) -> bool:
    """Whether `packed` is a quantized weight packed for quant_linear."""
    return packed is not None and not packed.is_mkldnn and packed.dtype == torch.uint8


def quant_packed_format(packed: torch.Tensor, k: int) -> tuple[int, int]:
    """(bits, group_size) of a weight packed by pack_quantized, from its shape
    [panels, k / group, 192 + 48 group bits / 8]."""
    group = k // packed.shape[1]
    return (packed.shape[2] - 192) * 8 // (48 * group), group


def quant_int8_max_rows() -> int:
    """quant_linear's int8_max_rows for the running step: 0 when it holds a
    prompt (bf16 prefill computes as the dense bf16 weight would: a first
    token is not left to int8 rounding of x), else the op's default (decode
    steps quantize x to int8, llama.cpp's way, the faster path at every
    batch size)."""
    md = get_attn_metadata_or_none()
    return 0 if md is not None and not md.decode_only else ops.QUANT_INT8_MAX_ROWS


def place_weights_in_call_order(layers: list[nn.Module]) -> None:
    """Moves the layers' weights into one buffer, back to back in the order
    given (the order a forward pass calls them).

    A decode step streams every weight once; laid out in call order the step
    is one long sequential read instead of hops around the heap, which the
    hardware prefetcher and the DRAM pages serve better: 120 small-row calls
    over SmolLM2's layer weights took 8.2 ms instead of 9.5-9.8 ms."""
    weights = [layer.weight for layer in layers]
    if len({(w.dtype, w.device) for w in weights}) != 1:
        return
    # on huge pages: no TLB miss or prefetcher restart every 4 KiB of the stream
    buffer = hugepages.empty(sum(w.numel() for w in weights), dtype=weights[0].dtype)
    offset = 0
    for layer, weight in zip(layers, weights):
        view = buffer[offset:offset + weight.numel()].view(weight.shape)
        view.copy_(weight)
        layer.weight.data = view
        offset += weight.numel()


def place_quantized_in_call_order(holders: list[nn.Module], attribute: str = "packed_weight"
                                  ) -> None:
    """Moves the quantized packings (`holder.<attribute>`, uint8) into one
    buffer on huge pages, back to back in the order given: a decode step's
    one sequential stream, as place_weights_in_call_order does for dense
    weights."""
    tensors = [getattr(h, attribute) for h in holders]
    if not tensors:
        return
    buffer = hugepages.empty(sum(t.numel() for t in tensors), dtype=torch.uint8)
    offset = 0
    for holder, tensor in zip(holders, tensors):
        view = buffer[offset:offset + tensor.numel()].view(tensor.shape)
        view.copy_(tensor)
        setattr(holder, attribute, view)
        offset += tensor.numel()


# Output columns per panel of a weight packed for ops.packed_linear
# (kPackedLinearPanel in csrc/cpu/kernel_table.h).
PAIR_PANEL = 48


def pair_packed_shape(out_features: int, in_features: int) -> tuple[int, int, int, int]:
    return (-(-out_features // PAIR_PANEL), in_features // 2, PAIR_PANEL, 2)


def pack_weight_pairs(weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A bf16 weight [n, k] (k even) in ops.packed_linear's layout: panels of
    48 output columns, each holding its columns' (k, k+1) pairs side by side,
    [ceil(n / 48), k / 2, 48, 2], zero columns past n. `out`, if given, is
    that tensor to fill."""
    n, k = weight.shape
    shape = pair_packed_shape(n, k)
    if out is None:
        out = torch.empty(shape, dtype=weight.dtype, device=weight.device)
    rows = shape[0] * PAIR_PANEL
    padded = weight if rows == n else F.pad(weight, (0, 0, 0, rows - n))
    # a pair is one 32-bit word: a batched 2-D transpose of words copies
    # twice as fast as a 4-D permute of 16-bit elements
    words = padded.contiguous().view(torch.int32).view(shape[0], PAIR_PANEL, k // 2)
    out.view(torch.int32).view(shape[:3]).copy_(words.transpose(1, 2))
    return out


def gate_up_packed_shape(out_features: int, in_features: int) -> tuple[int, ...]:
    return (-(-out_features // (2 * PAIR_PANEL)), 2, in_features // 2, PAIR_PANEL, 2)


def pack_gate_up_pairs(weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A gate/up weight [W_gate; W_up] (2d x k) in ops.packed_linear_gated's
    layout: each half packed as pack_weight_pairs does (zero columns past d
    in its last panel), their panels interleaved, [ceil(d / 48), 2, k / 2,
    48, 2] with [j][0] gate panel j and [j][1] up panel j, so a thread that
    computes act(gate) * up for a run of panels reads one contiguous
    stream."""
    n, k = weight.shape
    shape = gate_up_packed_shape(n, k)
    if out is None:
        out = torch.empty(shape, dtype=weight.dtype, device=weight.device)
    d, padded = n // 2, shape[0] * PAIR_PANEL
    halves = weight.view(2, d, k)
    if padded != d:
        halves = F.pad(halves, (0, 0, 0, padded - d))
    interleaved = halves.reshape(2, shape[0], PAIR_PANEL, k).transpose(0, 1).reshape(-1, k)
    pack_weight_pairs(interleaved, out.view(2 * shape[0], k // 2, PAIR_PANEL, 2))
    return out


def unpack_weight_pairs(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The [n, k] weight pack_weight_pairs packed (the inverse)."""
    panels, half_k = packed.shape[0], packed.shape[1]
    words = packed.contiguous().view(torch.int32).view(panels, half_k, PAIR_PANEL)
    rows = words.transpose(1, 2).reshape(panels * PAIR_PANEL, half_k)
    return rows[:n].contiguous().view(packed.dtype).view(n, 2 * half_k)


def unpack_gate_up_pairs(packed: torch.Tensor, d: int) -> torch.Tensor:
    """The [2d, k] [W_gate; W_up] pack_gate_up_pairs packed (the inverse)."""
    blocks, k = packed.shape[0], 2 * packed.shape[2]
    rows = unpack_weight_pairs(packed.reshape(2 * blocks, *packed.shape[2:]), 2 * blocks * PAIR_PANEL)
    halves = rows.view(blocks, 2, PAIR_PANEL, k).transpose(0, 1).reshape(2, -1, k)
    return halves[:, :d].reshape(2 * d, k)


def is_pair_packed(packed: torch.Tensor | None) -> bool:
    """Whether pack_weight chose our pair layout (else oneDNN's, a quantized
    packing, or None)."""
    return packed is not None and not packed.is_mkldnn and packed.dtype != torch.uint8


def is_gate_up_packed(packed: torch.Tensor | None) -> bool:
    """Whether pack_weight chose the interleaved gate/up layout."""
    return is_pair_packed(packed) and packed.dim() == 5


def pairs_apply(weight: torch.Tensor) -> bool:
    """Whether pack_weight_pairs / packed_linear serve this weight here."""
    return (weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and weight.dim() == 2
            and weight.shape[1] % 2 == 0 and ops.packed_linear_available())


def _gate_up_applies(weight: torch.Tensor, gate_up: bool) -> bool:
    return gate_up and pairs_apply(weight) and weight.shape[0] % 2 == 0


def pack_weight(weight: torch.Tensor, gate_up: bool = False) -> torch.Tensor | None:
    """The packed copy of a weight that apply_linear's GEMM reads, or None.

    bf16 on a CPU with AVX512-BF16: our pair layout, for ops.packed_linear at
    every row count. Against oneDNN on SmolLM2's shapes, weights streamed
    from memory as in a decode step: 1.13-1.34x faster at 64 rows, 1.02-1.08x
    at 512-2048, and 1.16-1.47x faster than the small-row kernel at 1 row
    (bench/RESULTS.md); a gate/up weight (`gate_up`)
    with its halves interleaved (pack_gate_up_pairs), for the fused
    projection and activation. Elsewhere oneDNN's blocked layout
    (pack_weight_for_onednn)."""
    if _gate_up_applies(weight, gate_up):
        return pack_gate_up_pairs(weight)
    if pairs_apply(weight):
        return pack_weight_pairs(weight)
    packed = pack_weight_for_onednn(weight)
    if packed is None and weight.dtype in (torch.bfloat16, torch.float16):
        _warn_torch_gemm(weight.dtype)
    return packed


_warned_torch_gemm: set[torch.dtype] = set()


def _warn_torch_gemm(dtype: torch.dtype) -> None:
    """Says once per dtype that batched 16-bit GEMMs fall back to torch."""
    if dtype in _warned_torch_gemm:
        return
    _warned_torch_gemm.add(dtype)
    logger.warning(
        "%s linear layers above %d rows run on torch's F.linear: the active CPU kernel "
        "variant (%s) has no packed %s GEMM, and torch's can be 100x slower than fp32 here; "
        "dtype=auto picks the fast one", str(dtype).replace("torch.", ""), SMALL_M_MAX_ROWS,
        ops.cpu_isa(), str(dtype).replace("torch.", ""))


def pack_weights_in_call_order(weights: list[torch.Tensor],
                               gate_up: list[bool] | None = None) -> list[torch.Tensor | None]:
    """pack_weight for each weight (`gate_up`: pack_weight's flag for each);
    in our pair layouts, back to back in one buffer on huge pages in the
    order given (the order a decode step streams them; see
    place_weights_in_call_order)."""
    gate_up = gate_up or [False] * len(weights)
    if not weights or not all(pairs_apply(w) for w in weights):
        return [pack_weight(w, g) for w, g in zip(weights, gate_up)]
    shapes = [gate_up_packed_shape(*w.shape) if _gate_up_applies(w, g) else pair_packed_shape(*w.shape)
              for w, g in zip(weights, gate_up)]
    sizes = [math.prod(shape) for shape in shapes]
    buffer = hugepages.empty(sum(sizes), dtype=weights[0].dtype)
    packed, offset = [], 0
    for weight, shape, size in zip(weights, shapes, sizes):
        view = buffer[offset:offset + size].view(shape)
        packed.append(pack_gate_up_pairs(weight, view) if len(shape) == 5
                      else pack_weight_pairs(weight, view))
        offset += size
    return packed


def pack_weight_for_onednn(weight: torch.Tensor) -> torch.Tensor | None:
    """oneDNN's own blocked layout of a bf16 weight, or None where unused.

    F.linear hands oneDNN the plain [out, in] weight and oneDNN reorders it
    into its blocked layout on every call: at 64 rows (a decode batch) that
    is 15-20% of the GEMM (bench/kernels/test_linear_bench.py, packed vs torch). Packing once
    at load costs a second copy of the weight; the plain one stays for the
    small-row kernel, which streams it as stored."""
    if not (_PACKED_ONEDNN and weight.dtype == torch.bfloat16 and weight.device.type == "cpu"
            and weight.dim() == 2):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def apply_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 packed: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b by the fastest path here: packed_linear on a weight in our
    pair layout; else our streaming kernel for a few rows, oneDNN on its
    packed weight, torch. (`packed` is what pack_weight made, or a quantized
    weight's packing: quant_linear.)"""
    if is_quant_packed(packed):
        bits, group = quant_packed_format(packed, weight.shape[1])
        x = x if x.stride(1) == 1 else x.contiguous()
        out = torch.empty(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
        ops.quant_linear(out.view(-1, weight.shape[0]), x.reshape(-1, x.shape[-1]), packed,
                         bits, group, bias, quant_int8_max_rows())
        return out
    if (is_pair_packed(packed) and x.dim() == 2 and x.dtype == torch.bfloat16
            and ops.packed_linear_available()):
        n = weight.shape[0]
        x = x if x.stride(1) == 1 else x.contiguous()
        if not is_gate_up_packed(packed):
            out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
            ops.packed_linear(out, x, packed, bias)
            return out
        # gate/up panels interleaved (callers of gate_up_activation do not get
        # here): the bias and the output columns in that order (each half
        # padded to whole panels), then back
        d, blocks = n // 2, packed.shape[0]
        padded = blocks * PAIR_PANEL
        if bias is not None:
            bias = F.pad(bias.view(2, d), (0, padded - d))
            bias = bias.view(2, blocks, PAIR_PANEL).transpose(0, 1).reshape(2 * padded)
        wide = torch.empty(x.shape[0], 2 * padded, dtype=x.dtype, device=x.device)
        ops.packed_linear(wide, x, packed.flatten(0, 1), bias)
        halves = wide.view(-1, blocks, 2, PAIR_PANEL).transpose(1, 2).reshape(-1, 2, padded)
        return halves[:, :, :d].reshape(-1, n)
    if _use_small_m_kernel(x, weight):
        out = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
        ops.small_m_linear(out, x, weight, bias)
        return out
    if packed is not None and packed.is_mkldnn and x.dim() == 2 and x.dtype == weight.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return F.linear(x, weight, bias)


# Up to this many rows (decode batches) the weights are the traffic and our
# streaming kernel wins (2-3.7x at 1 row); at 4 rows it is at parity and at 16
# twice slower than oneDNN, whose bf16 dot products win once compute counts
# (bench/kernels/test_linear_bench.py).
SMALL_M_MAX_ROWS = 3


def _use_small_m_kernel(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # 16-bit weights only: fp32 stays on torch, whose summation order the
    # token-exact comparisons with transformers rely on.
    return (x.dim() == 2 and x.shape[0] <= SMALL_M_MAX_ROWS and x.device.type == "cpu"
            and weight.dtype in (torch.bfloat16, torch.float16) and _HAS_SMALL_M)
