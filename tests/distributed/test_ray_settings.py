"""Ray settings that cannot apply to CPU workers (the compiled graph without
SPMD workers, its NCCL channel and overlap variants) and a bundle list of
the wrong length: refused by EngineArgs with one clear line, before Ray or
any worker process starts (no Ray needed)."""
from __future__ import annotations

import pytest

from tests.distributed.parallel_runs import default_tokenizer, save_random


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    save_random(folder, default_tokenizer(), "LlamaConfig", "LlamaForCausalLM",
                num_key_value_heads=2)
    return folder


@pytest.mark.parametrize("env,message", [
    ({"VLLM_RAY_BUNDLE_INDICES": "0"}, r"VLLM_RAY_BUNDLE_INDICES='0' must name 2 distinct "
                                       r"bundles, one per rank"),
    ({"VLLM_RAY_BUNDLE_INDICES": "1,1"}, r"must name 2 distinct bundles"),
    ({"VLLM_USE_RAY_COMPILED_DAG": "1"}, r"needs VLLM_USE_RAY_SPMD_WORKER=1"),
    ({"VLLM_USE_RAY_COMPILED_DAG": "1", "VLLM_USE_RAY_SPMD_WORKER": "1",
      "VLLM_USE_RAY_COMPILED_DAG_NCCL_CHANNEL": "1"}, r"NCCL channels carry GPU tensors"),
    ({"VLLM_USE_RAY_COMPILED_DAG": "1", "VLLM_USE_RAY_SPMD_WORKER": "1",
      "VLLM_USE_RAY_COMPILED_DAG_OVERLAP_COMM": "1"}, r"overlaps GPU communication"),
], ids=["bundles-too-few", "bundles-repeated", "dag-without-spmd", "nccl-channel", "overlap"])
def test_settings_that_cannot_apply_are_refused_before_ray_starts(monkeypatch, tiny_llama,
                                                                  env, message):
    # in EngineArgs: no Ray instance, no process (this one joins none)
    from vllm.engine.arg_utils import EngineArgs
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        EngineArgs(str(tiny_llama), dtype="float32", tensor_parallel_size=2,
                   distributed_executor_backend="ray").create_engine_config()


def test_settings_that_apply_pass(monkeypatch, tiny_llama):
    from vllm.engine.arg_utils import EngineArgs
    monkeypatch.setenv("VLLM_USE_RAY_COMPILED_DAG", "1")
    monkeypatch.setenv("VLLM_USE_RAY_SPMD_WORKER", "1")
    monkeypatch.setenv("VLLM_RAY_BUNDLE_INDICES", "1,0")
    config, _ = EngineArgs(str(tiny_llama), dtype="float32", tensor_parallel_size=2,
                           distributed_executor_backend="ray").create_engine_config()
    assert config.parallel_config.world_size == 2
