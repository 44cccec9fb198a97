"""Model families, one file each, and the registry that maps a config's
architecture name onto a class."""
from __future__ import annotations

_REGISTRY: dict[str, tuple[str, str]] = {
    "LlamaForCausalLM": ("vllm.model_executor.models.llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("vllm.model_executor.models.mistral", "MistralForCausalLM"),
    "Qwen2ForCausalLM": ("vllm.model_executor.models.qwen2", "Qwen2ForCausalLM"),
    "MixtralForCausalLM": ("vllm.model_executor.models.mixtral", "MixtralForCausalLM"),
    "Qwen2MoeForCausalLM": ("vllm.model_executor.models.qwen2_moe", "Qwen2MoeForCausalLM"),
    "Qwen3MoeForCausalLM": ("vllm.model_executor.models.qwen3_moe", "Qwen3MoeForCausalLM"),
    "OlmoeForCausalLM": ("vllm.model_executor.models.olmoe", "OlmoeForCausalLM"),
    "DeepseekV2ForCausalLM": ("vllm.model_executor.models.deepseek_v2", "DeepseekV2ForCausalLM"),
    "DeepseekV3ForCausalLM": ("vllm.model_executor.models.deepseek_v2", "DeepseekV3ForCausalLM"),
}
_CLASSES: dict[str, type] = {}


class ModelRegistry:
    """vLLM's public hook: plugins call register_model to add architectures."""

    @staticmethod
    def register_model(architecture: str, model_cls) -> None:
        if isinstance(model_cls, str):
            module, _, name = model_cls.partition(":")
            _REGISTRY[architecture] = (module, name)
            _CLASSES.pop(architecture, None)
        else:
            _CLASSES[architecture] = model_cls

    @staticmethod
    def get_supported_archs() -> list[str]:
        return sorted(set(_REGISTRY) | set(_CLASSES))

    @staticmethod
    def resolve(architectures: list[str]) -> type:
        import importlib
        for arch in architectures:
            if arch in _CLASSES:
                return _CLASSES[arch]
            if arch in _REGISTRY:
                module, name = _REGISTRY[arch]
                cls = getattr(importlib.import_module(module), name)
                _CLASSES[arch] = cls
                return cls
        raise ValueError(f"model architectures {architectures} are not supported; "
                         f"supported: {', '.join(ModelRegistry.get_supported_archs())}")
