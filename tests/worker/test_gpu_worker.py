"""What of the GPU worker runs without a GPU: the profiling step's shape,
which models the GPU path takes (dense Llama-family; MoE and quantized ones
refused in one line), the worker's refusal on a machine without a GPU, and
the engine's refusal to split across GPUs. The GPU runs themselves are
tests/engine/test_gpu_engine.py (marked cuda)."""
from types import SimpleNamespace

import pytest
import torch
import transformers

from vllm.attention.backends.paged import PagedAttentionBackend
from vllm.model_executor.model_loader.loader import check_runs_on_gpu
from vllm.worker.gpu_worker import GPUWorker, check_flashinfer_sampler, profile_token_layout


@pytest.mark.parametrize("batched,max_len,max_seqs,expected", [
    (2048, 1024, 256, [1024, 1024]),
    (2048, 4096, 256, [2048]),
    (5000, 2048, 256, [2048, 2048, 904]),
    (100, 10, 3, [10, 10, 10]),  # no step holds more than 3 sequences of 10
])
def test_profiling_step_is_the_largest_the_scheduler_can_send(batched, max_len, max_seqs,
                                                              expected):
    assert profile_token_layout(batched, max_len, max_seqs) == expected


def _tiny(config_cls, model_cls_name, **extra):
    from vllm.model_executor.models import ModelRegistry
    config = config_cls(vocab_size=128, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=64, **extra)
    cls = ModelRegistry.resolve([model_cls_name])
    return cls(config, torch.float32, PagedAttentionBackend)


def test_dense_llama_family_models_take_the_gpu_path():
    for config_cls, name in ((transformers.LlamaConfig, "LlamaForCausalLM"),
                             (transformers.MistralConfig, "MistralForCausalLM"),
                             (transformers.Qwen2Config, "Qwen2ForCausalLM")):
        model = _tiny(config_cls, name)
        check_runs_on_gpu(model, SimpleNamespace(quantization=None, architecture=name))


def test_moe_and_quantized_models_are_refused_on_the_gpu():
    moe = _tiny(transformers.MixtralConfig, "MixtralForCausalLM", num_local_experts=4,
                num_experts_per_tok=2)
    with pytest.raises(ValueError, match="MixtralForCausalLM does not run on the GPU yet"):
        check_runs_on_gpu(moe, SimpleNamespace(quantization=None,
                                               architecture="MixtralForCausalLM"))
    dense = _tiny(transformers.LlamaConfig, "LlamaForCausalLM")
    with pytest.raises(ValueError, match=r"quantized \(gguf\) does not run on the GPU yet"):
        check_runs_on_gpu(dense, SimpleNamespace(quantization="gguf",
                                                 architecture="LlamaForCausalLM"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_the_worker_refuses_a_machine_without_a_gpu():
    with pytest.raises(RuntimeError, match="needs a GPU torch can use"):
        GPUWorker(SimpleNamespace(), None)


def test_one_rank_on_one_gpu_for_now(monkeypatch):
    import vllm.platforms
    from vllm.engine.arg_utils import EngineArgs
    monkeypatch.setattr(vllm.platforms, "resolve_device",
                        lambda requested, facts=None: vllm.platforms.DeviceChoice("cuda", "test"))
    with pytest.raises(ValueError, match="one rank on one GPU for now"):
        EngineArgs(tensor_parallel_size=2, load_format="dummy").create_engine_config()
    config, _ = EngineArgs(load_format="dummy", gpu_memory_utilization=0.5,
                           enforce_eager=True).create_engine_config()
    assert (config.device_config.device, config.device_config.gpu_memory_utilization,
            config.device_config.enforce_eager) == ("cuda", 0.5, True)


def test_a_gpu_engine_core_is_spawned_not_forked(monkeypatch):
    from vllm.engine.core_client import _start_method
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "fork")
    assert _start_method("cuda") == "spawn"  # the parent asked the driver for its GPUs
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    assert _start_method("cuda") == "spawn"


def test_flashinfer_sampler_without_flashinfer_is_a_clear_error(monkeypatch):
    import importlib.util
    if importlib.util.find_spec("flashinfer") is not None:
        pytest.skip("flashinfer is installed here")
    monkeypatch.setenv("VLLM_USE_FLASHINFER_SAMPLER", "1")
    with pytest.raises(ValueError, match=r"needs the flashinfer package \(pip install "
                                         r"flashinfer-python\)"):
        check_flashinfer_sampler()
    monkeypatch.setenv("VLLM_USE_FLASHINFER_SAMPLER", "0")
    check_flashinfer_sampler()


def test_the_profiling_step_computes_what_the_engine_computes(tmp_path):
    """The GPU worker's profiling forward (the largest step, split into
    max_model_len sequences over a temporary cache), run on the CPU: each
    sequence's last-token logits are what the engine gives that prompt."""
    from tests.engine.gpu_checkpoints import save_random_model
    from vllm import LLM, SamplingParams
    save_random_model("llama", tmp_path)
    import dataclasses
    llm = LLM(str(tmp_path), dtype="float32", max_model_len=80, max_num_batched_tokens=160,
              max_num_seqs=8, enable_chunked_prefill=True)
    worker = llm.llm_engine.engine_core.worker
    config = llm.llm_engine.vllm_config
    probe = GPUWorker.__new__(GPUWorker)  # its device-neutral parts, on the CPU
    probe.device, probe.model = torch.device("cpu"), worker.model
    probe.config = dataclasses.replace(  # sequences of 64: the engine can still extend them
        config, model_config=dataclasses.replace(config.model_config, max_model_len=64))
    layers = worker.model.attention_layers()
    saved = [layer.kv_cache for layer in layers]
    try:
        cache_bytes, logits = probe._profile_forward()
    finally:
        for layer, cache in zip(layers, saved):
            layer.kv_cache = cache
    assert all(layer.kv_cache is not None for layer in layers)
    lengths = profile_token_layout(160, 64, 8)
    assert lengths == [64, 64, 32] and logits.shape[0] == 3
    assert config.cache_config.block_size == 32
    assert cache_bytes == (2 + 2 + 1) * probe.block_bytes()  # blocks of 64, 64 and 32 tokens
    for n, row in zip(lengths, logits.log_softmax(-1)):
        out = llm.generate({"prompt_token_ids": list(range(n))},
                           SamplingParams(temperature=0.0, max_tokens=1, logprobs=3),
                           use_tqdm=False)[0].outputs[0]
        assert out.token_ids[0] == int(row.argmax())
        for token, lp in out.logprobs[0].items():
            assert lp.logprob == pytest.approx(float(row[token]), abs=1e-4)
