"""The model creator's recommended sampling defaults, as vLLM's
`--generation-config` reads them: what a request (or `LLM.generate` without
SamplingParams) gets for the fields it leaves unset.

Sources, first found wins:
- `generation_config.json` in the model folder (for a GGUF file: beside it),
  or in the folder `--generation-config PATH` names;
- a GGUF file's own `general.sampling.*` metadata (llama.cpp's keys);
- for the embedded SmolLM2-135M-Instruct, whose GGUF file carries no
  sampling metadata: its model card's recommendation (temperature 0.2,
  top_p 0.9; at vLLM's plain default, temperature 1.0, it often answers
  nonsense).
`--generation-config vllm` turns them off (vLLM's own defaults)."""
from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger(__name__)

# generation_config.json key -> SamplingParams field (the ones vLLM reads)
_HF_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}
# GGUF metadata key -> SamplingParams field
_GGUF_KEYS = {"general.sampling.temp": "temperature", "general.sampling.top_p": "top_p",
              "general.sampling.top_k": "top_k", "general.sampling.min_p": "min_p",
              "general.sampling.penalty_repeat": "repetition_penalty"}
EMBEDDED_MODEL_DEFAULTS = {"temperature": 0.2, "top_p": 0.9}

_SOURCES = ("auto", "vllm")


def _from_json(path: str) -> dict:
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"generation config {path} cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"generation config {path} is not a JSON object")
    return {field: config[key] for key, field in _HF_KEYS.items() if config.get(key) is not None}


def _from_gguf(path: str) -> dict:
    from vllm.transformers_utils.gguf_file import gguf_metadata

    fields = gguf_metadata(path)
    return {field: fields[key] for key, field in _GGUF_KEYS.items() if key in fields}


def default_sampling(source: str, model_path: str, is_gguf: bool,
                     is_embedded_default: bool) -> dict:
    """SamplingParams fields the model recommends (may be empty).
    `source`: "auto", "vllm" (none) or a folder holding generation_config.json."""
    if source == "vllm":
        return {}
    if source != "auto":
        path = os.path.join(source, "generation_config.json")
        if not os.path.isfile(path):
            raise ValueError(f"generation_config {source!r} is not 'auto', 'vllm' or a folder "
                             "with a generation_config.json")
        found, origin = _from_json(path), path
    else:
        folder = os.path.dirname(model_path) if is_gguf else model_path
        path = os.path.join(folder, "generation_config.json")
        found, origin = {}, ""
        if os.path.isfile(path):
            found, origin = _from_json(path), path
        elif is_gguf:
            found, origin = _from_gguf(model_path), "the GGUF metadata"
            if not found and is_embedded_default:
                found, origin = dict(EMBEDDED_MODEL_DEFAULTS), "the model card"
    if found:
        logger.info("default sampling parameters from %s (the model's recommendation; "
                    "--generation-config vllm for vLLM's own): %s", origin, found)
    return found
