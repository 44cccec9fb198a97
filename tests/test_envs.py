"""vllm.envs against the reference (shared/spec): defaults, parsing, errors.

Expected values here are written from the spec text, not read back from
vllm.envs, so a wrong default or parse fails the test.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import pytest

from vllm import envs

from tests.utils import REPO_ROOT

HOME = os.path.expanduser("~")

# Every variable the spec names, with its default when unset.
SPEC_DEFAULTS = {
    "VLLM_TARGET_DEVICE": "cuda",
    "MAX_JOBS": None,
    "NVCC_THREADS": None,
    "VLLM_USE_PRECOMPILED": False,
    "CMAKE_BUILD_TYPE": None,
    "VERBOSE": False,
    "VLLM_CONFIG_ROOT": f"{HOME}/.config/vllm",
    "VLLM_CACHE_ROOT": f"{HOME}/.cache/vllm",
    "VLLM_HOST_IP": "",
    "VLLM_PORT": None,
    "VLLM_RPC_BASE_PATH": tempfile.gettempdir(),
    "VLLM_USE_MODELSCOPE": False,
    "VLLM_RINGBUFFER_WARNING_INTERVAL": 60,
    "CUDA_HOME": None,
    "VLLM_NCCL_SO_PATH": None,
    "LD_LIBRARY_PATH": None,
    "VLLM_USE_TRITON_FLASH_ATTN": True,
    "VLLM_FLASH_ATTN_VERSION": None,
    "VLLM_TEST_DYNAMO_FULLGRAPH_CAPTURE": True,
    "LOCAL_RANK": 0,
    "CUDA_VISIBLE_DEVICES": None,
    "VLLM_ENGINE_ITERATION_TIMEOUT_S": 60,
    "VLLM_API_KEY": None,
    "S3_ACCESS_KEY_ID": None,
    "S3_SECRET_ACCESS_KEY": None,
    "S3_ENDPOINT_URL": None,
    "VLLM_USAGE_STATS_SERVER": "https://stats.vllm.ai",
    "VLLM_NO_USAGE_STATS": False,
    "VLLM_DO_NOT_TRACK": False,
    "VLLM_USAGE_SOURCE": "production",
    "VLLM_CONFIGURE_LOGGING": 1,
    "VLLM_LOGGING_CONFIG_PATH": None,
    "VLLM_LOGGING_LEVEL": "INFO",
    "VLLM_LOGGING_PREFIX": "",
    "VLLM_LOGITS_PROCESSOR_THREADS": None,
    "VLLM_TRACE_FUNCTION": 0,
    "VLLM_ATTENTION_BACKEND": None,
    "VLLM_USE_FLASHINFER_SAMPLER": None,
    "VLLM_FLASHINFER_FORCE_TENSOR_CORES": False,
    "VLLM_PP_LAYER_PARTITION": None,
    "VLLM_CPU_KVCACHE_SPACE": 0,
    "VLLM_CPU_OMP_THREADS_BIND": "all",
    "VLLM_OPENVINO_DEVICE": "CPU",
    "VLLM_OPENVINO_KVCACHE_SPACE": 0,
    "VLLM_OPENVINO_CPU_KV_CACHE_PRECISION": None,
    "VLLM_OPENVINO_ENABLE_QUANTIZED_WEIGHTS": False,
    "VLLM_USE_RAY_SPMD_WORKER": False,
    "VLLM_USE_RAY_COMPILED_DAG": False,
    "VLLM_USE_RAY_COMPILED_DAG_NCCL_CHANNEL": True,
    "VLLM_USE_RAY_COMPILED_DAG_OVERLAP_COMM": False,
    "VLLM_WORKER_MULTIPROC_METHOD": "fork",
    "VLLM_ASSETS_CACHE": f"{HOME}/.cache/vllm/assets",
    "VLLM_IMAGE_FETCH_TIMEOUT": 5,
    "VLLM_VIDEO_FETCH_TIMEOUT": 30,
    "VLLM_AUDIO_FETCH_TIMEOUT": 10,
    "VLLM_MM_INPUT_CACHE_SIZE": 256,
    "VLLM_XLA_CACHE_PATH": f"{HOME}/.cache/vllm/xla_cache",
    "VLLM_FUSED_MOE_CHUNK_SIZE": 32768,
    "VLLM_NO_DEPRECATION_WARNING": False,
    "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": False,
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN": False,
    "VLLM_TEST_FORCE_FP8_MARLIN": False,
    "VLLM_TEST_FORCE_LOAD_FORMAT": "dummy",
    "VLLM_RPC_TIMEOUT": 10000,
    "VLLM_PLUGINS": None,
    "VLLM_TORCH_PROFILER_DIR": None,
    "VLLM_USE_TRITON_AWQ": False,
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": False,
    "VLLM_SKIP_P2P_CHECK": False,
    "VLLM_DISABLED_KERNELS": [],
    "VLLM_USE_V1": False,
    "VLLM_ROCM_FP8_PADDING": True,
    "K_SCALE_CONSTANT": 200,
    "V_SCALE_CONSTANT": 100,
    "VLLM_ENABLE_V1_MULTIPROCESSING": True,
    "VLLM_LOG_BATCHSIZE_INTERVAL": -1.0,
    "VLLM_DISABLE_COMPILE_CACHE": False,
    "VLLM_SERVER_DEV_MODE": False,
    "VLLM_V1_OUTPUT_PROC_CHUNK_SIZE": 128,
    "VLLM_MLA_DISABLE": False,
    "VLLM_MLA_PERFORM_MATRIX_ABSORPTION": True,
    "VLLM_MLA_DISABLE_REQUANTIZATION": False,
    "VLLM_ENABLE_MOE_ALIGN_BLOCK_SIZE_TRITON": False,
    "VLLM_RAY_PER_WORKER_GPUS": 1.0,
    "VLLM_RAY_BUNDLE_INDICES": "",
    "VLLM_CUDA_MEM_ALIGN_KV_CACHE": True,
    "VLLM_CUDART_SO_PATH": None,
    "VLLM_CONTIGUOUS_PA": True,
    "VLLM_DP_RANK": 0,
    "VLLM_DP_SIZE": 1,
    "VLLM_DP_MASTER_IP": "",
    "VLLM_DP_MASTER_PORT": 0,
    "VLLM_CI_USE_S3": False,
}

UNSET_FOR_DEFAULTS = ["MAX_JOBS", "NVCC_THREADS", "CMAKE_BUILD_TYPE", "VERBOSE",
                      "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "CUDA_HOME",
                      "LD_LIBRARY_PATH", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES",
                      "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY",
                      "S3_ENDPOINT_URL", "DO_NOT_TRACK", "K_SCALE_CONSTANT",
                      "V_SCALE_CONSTANT"]


@pytest.fixture
def bare_env(monkeypatch):
    for name in UNSET_FOR_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_spec_lists_exactly_these_names():
    spec = (REPO_ROOT.parent / "shared" / "spec").glob("*.txt")
    text = "\n".join(p.read_text() for p in spec)
    if not text:
        pytest.skip("shared/spec is not beside the checkout")
    named = set(re.findall(r'os\.(?:getenv|environ\.get|environ)\(?\[?\s*["\']([A-Z0-9_]+)', text))
    # Names whose line in the spec is cut before the variable name.
    named |= {"VLLM_CONFIG_ROOT", "VLLM_CACHE_ROOT", "VLLM_ASSETS_CACHE",
              "VLLM_XLA_CACHE_PATH", "VLLM_PLUGINS", "VLLM_DISABLED_KERNELS",
              "VLLM_PRECOMPILED_WHEEL_LOCATION"}
    named -= {"XDG_CONFIG_HOME", "XDG_CACHE_HOME"}
    missing = named - set(dir(envs))
    assert not missing, f"spec variables missing from vllm.envs: {sorted(missing)}"
    assert set(SPEC_DEFAULTS) <= named | {"DO_NOT_TRACK"}


@pytest.mark.parametrize("name,expected", sorted(SPEC_DEFAULTS.items()))
def test_default(bare_env, name, expected):
    assert getattr(envs, name) == expected


def test_dir_lists_every_variable():
    assert set(SPEC_DEFAULTS) <= set(dir(envs))


@pytest.mark.parametrize("name,raw,expected", [
    ("VLLM_PORT", "8000", 8000),
    ("VLLM_USE_MODELSCOPE", "True", True),
    ("VLLM_USE_MODELSCOPE", "1", False),  # reference: only the word true
    ("VLLM_USE_TRITON_FLASH_ATTN", "0", False),
    ("VLLM_USE_TRITON_FLASH_ATTN", "TRUE", True),
    ("VLLM_TEST_DYNAMO_FULLGRAPH_CAPTURE", "0", False),
    ("VLLM_TEST_DYNAMO_FULLGRAPH_CAPTURE", "anything", True),
    ("VLLM_FLASH_ATTN_VERSION", "3", 3),
    ("VLLM_NO_USAGE_STATS", "1", True),
    ("VLLM_NO_USAGE_STATS", "true", False),  # reference: == "1"
    ("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "0", True),  # reference: bool(str)
    ("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "", False),
    ("VLLM_ALLOW_LONG_MAX_MODEL_LEN", " True ", True),
    ("VLLM_OPENVINO_ENABLE_QUANTIZED_WEIGHTS", "on", True),
    ("VLLM_OPENVINO_DEVICE", "gpu", "GPU"),
    ("VLLM_PLUGINS", "a,b", ["a", "b"]),
    ("VLLM_PLUGINS", "", []),
    ("VLLM_DISABLED_KERNELS", "MacheteLinearKernel", ["MacheteLinearKernel"]),
    ("VLLM_LOG_BATCHSIZE_INTERVAL", "2.5", 2.5),
    ("VLLM_RAY_PER_WORKER_GPUS", "0.5", 0.5),
    ("VLLM_USE_V1", "1", True),
    ("VLLM_LOGITS_PROCESSOR_THREADS", "4", 4),
    ("VLLM_CONTIGUOUS_PA", "false", False),
    ("VLLM_TARGET_DEVICE", "cpu", "cpu"),
    ("VLLM_TARGET_DEVICE", "ROCm", "rocm"),
    ("MAX_JOBS", "3", 3),
    ("CMAKE_BUILD_TYPE", "Release", "Release"),
    ("VERBOSE", "1", True),
    ("VLLM_USE_PRECOMPILED", "1", True),
    ("VLLM_USE_PRECOMPILED", "0", False),
    ("VLLM_USE_PRECOMPILED", "false", False),
    ("VLLM_USE_PRECOMPILED", "no", False),
    ("VLLM_USE_PRECOMPILED", "", False),
    ("VLLM_CPU_KVCACHE_SPACE", "8", 8),
    ("VLLM_WORKER_MULTIPROC_METHOD", "spawn", "spawn"),
])
def test_parse(monkeypatch, name, raw, expected):
    monkeypatch.setenv(name, raw)
    assert getattr(envs, name) == expected


def test_paths_follow_xdg_and_expand_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert envs.VLLM_CONFIG_ROOT == str(tmp_path / "cfg" / "vllm")
    assert envs.VLLM_CACHE_ROOT == str(tmp_path / "cache" / "vllm")
    assert envs.VLLM_ASSETS_CACHE == str(tmp_path / "cache" / "vllm" / "assets")
    assert envs.VLLM_XLA_CACHE_PATH == str(tmp_path / "cache" / "vllm" / "xla_cache")
    monkeypatch.setenv("VLLM_CONFIG_ROOT", "~/elsewhere")
    assert envs.VLLM_CONFIG_ROOT == os.path.join(HOME, "elsewhere")
    monkeypatch.setenv("VLLM_TORCH_PROFILER_DIR", "~/traces")
    assert envs.VLLM_TORCH_PROFILER_DIR == os.path.join(HOME, "traces")


def test_precompiled_turns_on_with_a_wheel_location(monkeypatch):
    monkeypatch.setenv("VLLM_PRECOMPILED_WHEEL_LOCATION", "/tmp/x.whl")
    assert envs.VLLM_USE_PRECOMPILED is True
    monkeypatch.setenv("VLLM_USE_PRECOMPILED", "0")
    assert envs.VLLM_USE_PRECOMPILED is False


def test_do_not_track_reads_the_generic_variable(bare_env):
    bare_env.setenv("DO_NOT_TRACK", "1")
    assert envs.VLLM_DO_NOT_TRACK is True
    bare_env.setenv("VLLM_DO_NOT_TRACK", "0")  # reference: the first set wins
    assert envs.VLLM_DO_NOT_TRACK is False


def test_values_are_read_live(monkeypatch):
    monkeypatch.setenv("VLLM_RPC_TIMEOUT", "5")
    assert envs.VLLM_RPC_TIMEOUT == 5
    monkeypatch.setenv("VLLM_RPC_TIMEOUT", "7")
    assert envs.VLLM_RPC_TIMEOUT == 7


def test_kubernetes_port_uri_is_explained(monkeypatch):
    monkeypatch.setenv("VLLM_PORT", "tcp://10.0.0.1:8000")
    with pytest.raises(ValueError) as info:
        envs.VLLM_PORT
    message = str(info.value)
    assert "VLLM_PORT" in message and "tcp://10.0.0.1:8000" in message
    assert "Kubernetes" in message and "Service named 'vllm'" in message


@pytest.mark.parametrize("name,raw,accepted_hint", [
    ("VLLM_PORT", "eighty", "port number"),
    ("VLLM_PORT", "70000", "port number"),
    ("VLLM_USE_V1", "yes", "0 or 1"),
    ("VLLM_RPC_TIMEOUT", "soon", "integer"),
    ("VLLM_TARGET_DEVICE", "tpu9", "cuda | rocm | cpu"),
    ("MAX_JOBS", "0", ">= 1"),
    ("MAX_JOBS", "many", ">= 1"),
    ("NVCC_THREADS", "-2", ">= 1"),
    ("CMAKE_BUILD_TYPE", "Fast", "Debug | Release | RelWithDebInfo"),
    ("VERBOSE", "yes", "0 or 1"),
    ("VLLM_LOGGING_LEVEL", "LOUD", "DEBUG | INFO"),
    ("VLLM_CPU_KVCACHE_SPACE", "-1", ">= 0"),
    ("VLLM_WORKER_MULTIPROC_METHOD", "forkserver2", "fork | spawn"),
    ("VLLM_LOG_BATCHSIZE_INTERVAL", "often", "number"),
    ("VLLM_CPU_ISA", "avx1024", "avx512"),
])
def test_bad_value_names_variable_and_accepted(monkeypatch, name, raw, accepted_hint):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError) as info:
        getattr(envs, name)
    assert name in str(info.value) and repr(raw) in str(info.value)
    assert accepted_hint in str(info.value)


def test_unknown_vllm_variable_warns_with_closest_name(monkeypatch):
    monkeypatch.setenv("VLLM_PROT", "8000")
    monkeypatch.setenv("VLLM_COMPLETELY_DIFFERENT_THING", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs.warn_unknown_vllm_variables()
    messages = [str(w.message) for w in caught]
    assert any("VLLM_PROT" in m and "VLLM_PORT" in m for m in messages)
    assert any("VLLM_COMPLETELY_DIFFERENT_THING" in m for m in messages)


def test_known_variables_do_not_warn(monkeypatch):
    monkeypatch.setenv("VLLM_PORT", "8000")
    assert envs.unknown_vllm_variables() == []


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        envs.VLLM_NOT_A_VARIABLE


def test_docs_table_is_generated_from_the_registry():
    doc = (REPO_ROOT / "docs" / "environment_variables.md").read_text()
    assert envs.markdown_table() in doc, (
        "docs/environment_variables.md is stale: regenerate it with "
        "python -m vllm.envs --markdown")


def test_envs_is_the_only_reader_of_the_environment():
    package = Path(envs.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "envs.py":
            continue
        if re.search(r"os\.(environ|getenv)", path.read_text()):
            offenders.append(str(path.relative_to(package)))
    assert offenders == []
