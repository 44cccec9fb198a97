"""Shared engines for the engine tests: the embedded SmolLM2 (fp32 and
dequantized at load, for exact comparison with transformers; served
quantized it computes x in int8 and near-ties may flip) and the
transformers model itself."""
from __future__ import annotations

import os

import pytest
import torch

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity in one sentence.",
    "List three primary colors.",
    "How do I reverse a list in Python?",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Give me a tip for sleeping better.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue?",
    "Suggest a name for a small bakery.",
]


@pytest.fixture(scope="session")
def smollm_fp32():
    from vllm import LLM
    return LLM(dtype="float32", quantization="none", max_model_len=1024)


@pytest.fixture(scope="session")
def hf_smollm():
    from transformers import AutoModelForCausalLM

    from vllm.transformers_utils.model_resolver import default_model_path
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                 gguf_file=os.path.basename(path),
                                                 dtype=torch.float32)
    model.generation_config.eos_token_id = None  # compare full lengths
    model.generation_config.pad_token_id = 0
    return model.eval()


def chat_token_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False).input_ids
