"""General plugins from entry points: a small plugin package (installed as
a .dist-info beside its module on PYTHONPATH) registers a model
architecture; VLLM_PLUGINS selects; a failing plugin is logged or fatal."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _make_plugin_site(tmp_path, body: str, name: str = "tinyplugin"):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(body))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[vllm.general_plugins]\n{name} = {name}:register\n")
    return site


PLUGIN = """
import os
def register():
    from vllm import ModelRegistry
    from vllm.model_executor.models.llama import LlamaForCausalLM
    class MyTinyLM(LlamaForCausalLM):
        pass
    ModelRegistry.register_model("MyTinyLM", MyTinyLM)
    print("tinyplugin registered in", os.getpid(), flush=True)
"""

CHECK = ("from vllm.plugins import load_general_plugins; from vllm import ModelRegistry;"
         "print('ran', load_general_plugins()); print('MyTinyLM' in "
         "ModelRegistry.get_supported_archs())")


def _run(site, code, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    full.update(env, PYTHONPATH=str(site), DO_NOT_TRACK="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300)


def test_plugin_registers_an_architecture_and_vllm_plugins_selects(tmp_path):
    site = _make_plugin_site(tmp_path, PLUGIN)
    out = _run(site, CHECK)
    assert out.returncode == 0, out.stderr
    assert "ran ['tinyplugin']" in out.stdout and out.stdout.strip().endswith("True")
    only_other = _run(site, CHECK, VLLM_PLUGINS="someother")
    assert "ran []" in only_other.stdout and only_other.stdout.strip().endswith("False")


@pytest.mark.parametrize("setting, ran", [("", []), ("someother,tinyplugin", ["tinyplugin"])])
def test_vllm_plugins_selects_by_name(tmp_path, monkeypatch, setting, ran):
    # selection only (the subprocess test above covers a whole process):
    # here, with the once-per-process flag reset and a no-op plugin
    import vllm.plugins
    site = _make_plugin_site(tmp_path, "def register():\n    pass\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(vllm.plugins, "_loaded", False)
    monkeypatch.setenv("VLLM_PLUGINS", setting)
    assert vllm.plugins.load_general_plugins() == ran


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer random Llama saved by transformers under the plugin's
    architecture name (made once: both start methods load it)."""
    import json

    import transformers

    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    model = tmp_path_factory.mktemp("plugin-model")
    tok = load_gguf_tokenizer(default_model_path())
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=128)
    transformers.LlamaForCausalLM(cfg).save_pretrained(model)
    tok.save_pretrained(model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["MyTinyLM"]
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize("method, runs", [("spawn", 2), ("fork", 1)])
def test_engine_uses_the_plugin_architecture_in_its_own_process(tmp_path, tiny_model, method,
                                                                 runs):
    # spawn: the plugin runs again in the engine process; fork (vLLM's
    # default): the engine process inherits what it registered.
    site = _make_plugin_site(tmp_path, PLUGIN)
    model = tiny_model
    # A fresh process (no torch kernels run yet), so fork is safe to use.
    code = textwrap.dedent(f"""
        import asyncio
        from vllm.engine.arg_utils import EngineArgs
        from vllm.engine.async_llm import AsyncLLM
        from vllm import SamplingParams
        async def main():
            engine = AsyncLLM(EngineArgs(model={str(model)!r}))
            async for out in engine.generate("hi", SamplingParams(max_tokens=2), "r"):
                pass
            engine.shutdown()
            print("tokens", len(out.outputs[0].token_ids))
        asyncio.run(main())
    """)
    out = _run(site, code, VLLM_CPU_KVCACHE_SPACE="1", VLLM_WORKER_MULTIPROC_METHOD=method)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tokens 2" in out.stdout  # the engine process built MyTinyLM
    assert out.stdout.count("tinyplugin registered") == runs


def test_failing_plugin_is_logged_or_fatal(tmp_path):
    site = _make_plugin_site(tmp_path, "def register():\n    raise RuntimeError('boom')\n",
                             name="badplugin")
    out = _run(site, CHECK)
    assert out.returncode == 0 and "ran []" in out.stdout
    assert "plugin badplugin" in out.stdout and "boom" in out.stdout
    fatal = _run(site, CHECK, VLLM_PLUGINS_FAIL_ON_ERROR="1")
    assert fatal.returncode != 0 and "plugin 'badplugin'" in fatal.stderr
