"""Building a model and filling its weights from a checkpoint."""
from vllm.model_executor.model_loader.loader import get_model

__all__ = ["get_model"]
