"""The model's recommended sampling defaults (vLLM's --generation-config):
read from a generation_config.json written by transformers itself, from a
GGUF file's general.sampling.* metadata written by the gguf package, the
embedded model's model-card values; applied only to the fields a request
leaves unset; 'vllm' turns them off; a bad folder is a clear error."""
from __future__ import annotations

import numpy as np
import pytest

from vllm.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest
from vllm.transformers_utils.generation_defaults import (EMBEDDED_MODEL_DEFAULTS,
                                                         default_sampling)


def test_generation_config_json_from_transformers(tmp_path):
    from transformers import GenerationConfig
    GenerationConfig(temperature=0.6, top_p=0.95, top_k=20, repetition_penalty=1.1,
                     max_new_tokens=77, do_sample=True).save_pretrained(tmp_path)
    found = default_sampling("auto", str(tmp_path), False, False)
    assert found == {"temperature": 0.6, "top_p": 0.95, "top_k": 20,
                     "repetition_penalty": 1.1, "max_tokens": 77}
    # a folder named explicitly, for any model
    assert default_sampling(str(tmp_path), "/elsewhere", False, False) == found
    assert default_sampling("vllm", str(tmp_path), False, False) == {}


def _gguf_with(path, fields: dict) -> str:
    import gguf
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in fields.items():
        writer.add_float32(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_gguf_sampling_metadata(tmp_path):
    path = _gguf_with(tmp_path / "m.gguf", {"general.sampling.temp": 0.7,
                                            "general.sampling.top_p": 0.8})
    found = default_sampling("auto", path, True, False)
    assert found == pytest.approx({"temperature": 0.7, "top_p": 0.8})
    # a generation_config.json beside the file wins
    (tmp_path / "generation_config.json").write_text('{"temperature": 0.3}')
    assert default_sampling("auto", path, True, False) == {"temperature": 0.3}


def test_gguf_without_metadata_gets_nothing_unless_it_is_the_embedded_model(tmp_path):
    path = _gguf_with(tmp_path / "m.gguf", {})
    assert default_sampling("auto", path, True, False) == {}
    assert default_sampling("auto", path, True, True) == EMBEDDED_MODEL_DEFAULTS


def test_bad_source_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not 'auto', 'vllm' or a folder"):
        default_sampling(str(tmp_path), "/m", False, False)
    (tmp_path / "generation_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a JSON object"):
        default_sampling(str(tmp_path), "/m", False, False)


def test_defaults_fill_only_unset_fields():
    defaults = {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "max_tokens": 10}
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.7)
    params = chat.to_sampling_params(100, defaults)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.7, 0.9, 5, 10)
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert chat.to_sampling_params(100, defaults).max_tokens == 50
    plain = CompletionRequest(prompt="hi").to_sampling_params(100, {})
    assert (plain.temperature, plain.top_p, plain.top_k) == (1.0, 1.0, -1)


def test_llm_uses_them_when_given_no_sampling_params():
    from vllm import LLM
    llm = LLM(load_format="dummy", max_model_len=64)
    params = llm.get_default_sampling_params()
    assert (params.temperature, params.top_p) == (0.2, 0.9)
    off = LLM(load_format="dummy", max_model_len=64, generation_config="vllm")
    assert off.get_default_sampling_params().temperature == 1.0
