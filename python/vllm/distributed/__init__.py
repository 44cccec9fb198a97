"""Multi-process communication with vLLM's names (vllm.distributed):
process groups (parallel_state.py) and the collectives a tensor- or
pipeline-parallel model calls (communication_op.py)."""
from vllm.distributed.communication_op import (broadcast_tensor_dict,
                                               tensor_model_parallel_all_gather,
                                               tensor_model_parallel_all_reduce,
                                               tensor_model_parallel_gather)
from vllm.distributed.parallel_state import (GroupCoordinator, destroy_distributed_environment,
                                             destroy_model_parallel, get_pp_group, get_tp_group,
                                             get_tensor_model_parallel_rank,
                                             get_tensor_model_parallel_world_size,
                                             get_world_group, init_distributed_environment,
                                             initialize_model_parallel,
                                             model_parallel_is_initialized)

__all__ = ["GroupCoordinator", "broadcast_tensor_dict", "destroy_distributed_environment",
           "destroy_model_parallel", "get_pp_group", "get_tensor_model_parallel_rank",
           "get_tensor_model_parallel_world_size", "get_tp_group", "get_world_group",
           "init_distributed_environment", "initialize_model_parallel",
           "model_parallel_is_initialized", "tensor_model_parallel_all_gather",
           "tensor_model_parallel_all_reduce", "tensor_model_parallel_gather"]
