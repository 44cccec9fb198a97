"""Which decoder layers a pipeline stage holds (vLLM's get_pp_indices)."""
from __future__ import annotations

from vllm import envs


def parse_int_list(variable: str, spec: str, what: str) -> list[int]:
    """`spec`, a comma-separated list of integers, from the variable named;
    else an error naming the variable and what its items are."""
    try:
        return [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError(f"{variable}={spec!r} is not comma-separated {what}") from None


def pipeline_partition(num_layers: int, pp_size: int) -> list[int]:
    """Layer counts per stage: VLLM_PP_LAYER_PARTITION when set (one
    positive count per stage, summing to the layer count), else an even
    split whose remainder goes to the stages before the last, from the
    second-to-last backwards (the last one also runs the LM head and the
    sampler), as vLLM splits."""
    spec = envs.VLLM_PP_LAYER_PARTITION
    if spec:
        counts = parse_int_list("VLLM_PP_LAYER_PARTITION", spec,
                                "layer counts, such as '12,12'")
        if len(counts) != pp_size:
            raise ValueError(f"VLLM_PP_LAYER_PARTITION={spec!r} names {len(counts)} stage(s); "
                             f"pipeline_parallel_size is {pp_size}")
        if sum(counts) != num_layers:
            raise ValueError(f"VLLM_PP_LAYER_PARTITION={spec!r} sums to {sum(counts)} layers; "
                             f"the model has {num_layers}")
        if min(counts) < 1:
            raise ValueError(f"VLLM_PP_LAYER_PARTITION={spec!r}: every stage needs at least "
                             "one layer")
        return counts
    if num_layers < pp_size:
        raise ValueError(f"pipeline_parallel_size {pp_size} exceeds the model's "
                         f"{num_layers} layers")
    counts = [num_layers // pp_size] * pp_size
    for stage in range(pp_size - 2, pp_size - 2 - num_layers % pp_size, -1):
        counts[stage] += 1
    return counts


def get_pp_indices(num_layers: int, pp_rank: int, pp_size: int) -> tuple[int, int]:
    """[start, end) of the layers stage `pp_rank` holds."""
    counts = pipeline_partition(num_layers, pp_size)
    start = sum(counts[:pp_rank])
    return start, start + counts[pp_rank]
