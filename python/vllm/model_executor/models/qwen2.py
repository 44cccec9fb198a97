"""Qwen2: the Llama architecture with biases on the q/k/v projections."""
from vllm.model_executor.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    qkv_bias = True
