"""`vllm generate` and `vllm chat` on the embedded default model, as a user
runs them."""
from __future__ import annotations

import os
import subprocess
import sys


def _vllm(args, stdin=None):
    exe = os.path.join(os.path.dirname(sys.executable), "vllm")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))


def test_generate_prints_the_completion():
    out = _vllm(["generate", "--chat", "--max-tokens", "20", "--dtype", "float32", "--quantization", "none",
                 "What is the capital of France?"])
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


def test_chat_answers_each_line_and_keeps_the_conversation():
    out = _vllm(["chat", "--max-tokens", "24", "--dtype", "float32", "--quantization", "none"],
                stdin="What is the capital of France?\nAnd of Italy?\n")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout and "Rome" in out.stdout
