"""Logging variables, deprecation warnings, batch-size logs and function
tracing: what is set up at `import vllm` seen from a fresh Python process,
what is read at call time checked in this one."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300)


LOG_LINE = ("import logging, vllm; logging.getLogger('vllm.test').info('hello'); "
            "logging.getLogger('vllm.test').debug('details')")


def test_default_logging_prefix_level_and_process_name():
    out = _python(LOG_LINE, VLLM_LOGGING_PREFIX="[node7] ")
    line = next(l for l in out.stdout.splitlines() if "hello" in l)
    assert line.startswith("[node7] INFO ") and "MainProcess(" in line and "details" not in out.stdout
    debug = _python(LOG_LINE, VLLM_LOGGING_LEVEL="DEBUG")
    assert "details" in debug.stdout
    bad = _python("import vllm", VLLM_LOGGING_LEVEL="LOUD")
    assert bad.returncode != 0 and "VLLM_LOGGING_LEVEL='LOUD' is invalid" in bad.stderr


def test_configure_logging_off_leaves_logging_alone():
    out = _python(LOG_LINE, VLLM_CONFIGURE_LOGGING="0")
    assert out.returncode == 0 and "hello" not in out.stdout + out.stderr


def test_logging_config_file(tmp_path):
    log_file = tmp_path / "vllm.log"
    config = {"version": 1, "formatters": {"f": {"format": "CUSTOM %(name)s %(message)s"}},
              "handlers": {"file": {"class": "logging.FileHandler", "formatter": "f",
                                    "filename": str(log_file)}},
              "loggers": {"vllm": {"handlers": ["file"], "level": "INFO"}}}
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    out = _python(LOG_LINE, VLLM_LOGGING_CONFIG_PATH=str(path))
    assert out.returncode == 0, out.stderr
    assert log_file.read_text().strip() == "CUSTOM vllm.test hello"
    missing = _python("import vllm", VLLM_LOGGING_CONFIG_PATH=str(tmp_path / "nope.json"))
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    both = _python("import vllm", VLLM_LOGGING_CONFIG_PATH=str(path),
                   VLLM_CONFIGURE_LOGGING="0")
    assert both.returncode != 0 and "VLLM_CONFIGURE_LOGGING=0" in both.stderr


@pytest.fixture(scope="module")
def dummy_llm():
    """One small engine in this process for the checks made at call time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM
        yield LLM(load_format="dummy", max_model_len=64)


def test_deprecation_warning_and_its_silencer(dummy_llm, monkeypatch):
    # read when the deprecated argument is used, not at import: checked in
    # this process
    from vllm import SamplingParams

    def generate_by_token_ids() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dummy_llm.generate(prompt_token_ids=[[5, 6]],
                               sampling_params=SamplingParams(max_tokens=1), use_tqdm=False)
        return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]

    monkeypatch.delenv("VLLM_NO_DEPRECATION_WARNING", raising=False)
    assert any("prompt_token_ids" in message for message in generate_by_token_ids())
    monkeypatch.setenv("VLLM_NO_DEPRECATION_WARNING", "1")
    assert generate_by_token_ids() == []


def _batch_size_log_lines(**env: str) -> list[str]:
    """The engine core's log lines while 3 requests decode together, with
    the given environment when the engine is built (that is when the
    interval is read)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    core_logger = logging.getLogger("vllm.engine.core")
    core_logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
            mp.delenv("VLLM_LOG_BATCHSIZE_INTERVAL", raising=False)
            for name, value in env.items():
                mp.setenv(name, value)
            from vllm import LLM, SamplingParams
            llm = LLM(load_format="dummy", max_model_len=64)
            llm.generate(["a b c"] * 3, SamplingParams(max_tokens=20, ignore_eos=True),
                         use_tqdm=False)
            del llm
    finally:
        core_logger.removeHandler(handler)
    return [line for line in lines if "batch sizes over the last" in line]


def test_batch_size_log_interval():
    logged = _batch_size_log_lines(VLLM_LOG_BATCHSIZE_INTERVAL="0.000001")
    assert logged and any("3: " in line for line in logged), logged
    assert _batch_size_log_lines() == []


def test_function_trace_writes_a_file_under_the_cache_root(tmp_path):
    code = "import vllm.config, json; json.dumps({'a': 1})"
    out = _python(code, VLLM_TRACE_FUNCTION="1", VLLM_CACHE_ROOT=str(tmp_path))
    assert out.returncode == 0, out.stderr
    traces = list((tmp_path / "function_traces").glob("vllm-trace-pid*.log"))
    assert len(traces) == 1 and "VLLM_TRACE_FUNCTION is on" in out.stdout
    text = traces[0].read_text()
    assert "call dumps in" in text and "return dumps" in text
    untraced = _python("import vllm", VLLM_CACHE_ROOT=str(tmp_path / "other"))
    assert untraced.returncode == 0 and "VLLM_TRACE_FUNCTION" not in untraced.stdout
    assert not (tmp_path / "other" / "function_traces").exists()


def test_llm_profiler_writes_a_trace_under_the_expanded_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VLLM_TORCH_PROFILER_DIR", "~/traces")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    llm = LLM(load_format="dummy", max_model_len=64)
    llm.start_profile()
    llm.generate("hello", SamplingParams(max_tokens=2), use_tqdm=False)
    path = llm.stop_profile()
    assert os.path.dirname(path) == str(tmp_path / "traces")
    trace = json.loads(open(path).read())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any("_C::" in name for name in names)  # our kernels show up by name


def test_profiler_without_its_variable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM
    llm = LLM(load_format="dummy", max_model_len=64)
    with pytest.raises(RuntimeError, match="VLLM_TORCH_PROFILER_DIR"):
        llm.start_profile()
