"""Mistral: the Llama architecture (its sliding window is handled by capping
the context at the window, see config.derive_max_model_len)."""
from vllm.model_executor.models.llama import LlamaForCausalLM


class MistralForCausalLM(LlamaForCausalLM):
    pass
