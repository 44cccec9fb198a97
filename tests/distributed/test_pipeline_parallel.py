"""Pipeline parallelism (pipeline_parallel_size=2: stage 0 in the engine
core, stage 1 a worker process; the engine keeps two micro-batches in
flight) against one process, on tiny random checkpoints written by
transformers and on SmolLM2: greedy fp32 tokens equal, prompt logprobs
within 1e-4, seeded sampling equal. Layer splits by vLLM's rule and by
VLLM_PP_LAYER_PARTITION; bad partitions refused before any process starts;
the server with --pipeline-parallel-size 2; a worker killed mid-stream
ends the server non-zero within seconds, leaving no process behind."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.distributed.parallel_runs import (assert_same_generation, default_tokenizer,
                                             run_engine, save_random)


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("llama3l")
    save_random(folder, tokenizer, "LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2,
                num_hidden_layers=3)
    return folder


@pytest.fixture(scope="module")
def one_process(three_layers):
    return run_engine(three_layers)


# ------------------------------------------------------------------ splits
@pytest.mark.parametrize("layers,stages,expected", [
    (30, 2, [15, 15]), (31, 2, [16, 15]), (30, 4, [7, 8, 8, 7]), (7, 4, [2, 2, 2, 1]),
    (5, 4, [1, 1, 2, 1]), (4, 4, [1, 1, 1, 1])])
def test_default_split_gives_the_remainder_to_the_stages_before_the_last(
        monkeypatch, layers, stages, expected):
    # vLLM's rule: even counts, one extra layer each for the stages from the
    # second-to-last backwards (the last one also runs the LM head)
    from vllm.distributed.utils import get_pp_indices, pipeline_partition
    monkeypatch.delenv("VLLM_PP_LAYER_PARTITION", raising=False)
    assert pipeline_partition(layers, stages) == expected
    bounds = [get_pp_indices(layers, rank, stages) for rank in range(stages)]
    assert bounds[0][0] == 0 and bounds[-1][1] == layers
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


@pytest.mark.parametrize("spec,message", [
    ("4,20", None), ("1,2,3", r"names 3 stage\(s\); pipeline_parallel_size is 2"),
    ("10,10", r"sums to 20 layers; the model has 24"), ("0,24", "at least one layer"),
    ("12;12", "not comma-separated layer counts")])
def test_layer_partition_variable(monkeypatch, spec, message):
    from vllm.distributed.utils import pipeline_partition
    monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", spec)
    if message is None:
        assert pipeline_partition(24, 2) == [4, 20]
    else:
        with pytest.raises(ValueError, match=message):
            pipeline_partition(24, 2)


def test_more_stages_than_layers_is_refused(monkeypatch):
    from vllm.distributed.utils import pipeline_partition
    monkeypatch.delenv("VLLM_PP_LAYER_PARTITION", raising=False)
    with pytest.raises(ValueError, match="pipeline_parallel_size 4 exceeds the model's 3 layers"):
        pipeline_partition(3, 4)


def test_a_bad_partition_fails_at_configuration(monkeypatch, three_layers):
    """Before any worker process or process group exists: one clear line."""
    from vllm.engine.arg_utils import EngineArgs
    monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", "1,1")
    with pytest.raises(ValueError, match="sums to 2 layers; the model has 3"):
        EngineArgs(model=str(three_layers), pipeline_parallel_size=2).create_engine_config()


# ------------------------------------------------------------------ engines
def test_two_stages_match_one_process(three_layers, one_process):
    two = run_engine(three_layers, pp=2)
    assert two["layers"] == [0, 2]  # rank 0's stage: vLLM's split of 3 layers
    assert_same_generation(one_process, two)


@pytest.mark.slow
@pytest.mark.parametrize("tp,pp,partition", [(1, 2, "1,2"), (2, 2, None)],
                         ids=["partition-1,2", "tp2-pp2"])
def test_other_splits_match_one_process(three_layers, one_process, tp, pp, partition):
    env = {"VLLM_PP_LAYER_PARTITION": partition} if partition else {}
    other = run_engine(three_layers, tp=tp, pp=pp, **env)
    assert other["layers"] == ([0, 1] if partition else [0, 2])
    assert other["heads"] == 4 // tp
    assert_same_generation(one_process, other)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v2"])
def test_moe_and_mla_models_split_into_stages(tmp_path, tokenizer, family):
    if family == "deepseek_v2":
        from tests.engine.deepseek_checkpoints import save_random_deepseek
        save_random_deepseek("v2", tmp_path, tokenizer, num_hidden_layers=3)
    else:
        from tests.engine.moe_checkpoints import save_random_moe
        save_random_moe(family, tmp_path, tokenizer, num_hidden_layers=3)
    assert_same_generation(run_engine(tmp_path), run_engine(tmp_path, pp=2))


@pytest.mark.slow
def test_bf16_stages_run_the_fused_layer_loop_on_every_row(three_layers):
    """bf16 takes the C++ layer loop, which serves only the sampled rows in
    the model's last layer: a stage before the last must hand on every row.
    The hand-over is rounded as the fused residual add rounds it, so the
    tokens equal one process's."""
    one = run_engine(three_layers, dtype="bfloat16")
    two = run_engine(three_layers, pp=2, dtype="bfloat16")
    # the seeded run prunes rows (the greedy one asks for prompt logprobs,
    # which need every row)
    assert (two["greedy"], two["seeded"]) == (one["greedy"], one["seeded"])


@pytest.mark.slow
def test_smollm2_two_stages_match_one_process():
    from vllm.transformers_utils.model_resolver import default_model_path
    path = default_model_path()
    assert_same_generation(run_engine(path), run_engine(path, pp=2))


# ------------------------------------------------------------------ server
@pytest.mark.slow  # a server and a worker process; CI's slow step runs it
def test_served_with_two_stages_equals_offline(three_layers, one_process, tokenizer):
    from tests.entrypoints.server import RemoteServer
    server = RemoteServer([str(three_layers), "--dtype", "float32",
                           "--pipeline-parallel-size", "2"])
    try:
        completion = server.client().completions.create(
            model=str(three_layers), prompt=list(range(5, 12)), max_tokens=10, temperature=0,
            extra_body={"ignore_eos": True, "skip_special_tokens": False})
        assert completion.choices[0].text == tokenizer.decode(one_process["greedy"][0])
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_worker_killed_mid_stream_ends_the_server(three_layers):
    from tests.entrypoints.server import RemoteServer
    server = RemoteServer([str(three_layers), "--dtype", "float32",
                           "--pipeline-parallel-size", "2"])
    engine = server.engine_pid()
    (worker,) = _children(engine)
    stream = server.client().completions.create(
        model=str(three_layers), prompt=[5, 6, 7], max_tokens=400, temperature=0, stream=True,
        extra_body={"ignore_eos": True})
    try:
        next(iter(stream))  # the stream is under way
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        received = 1
        try:  # the stream ends early, with an error or cut off
            for _ in stream:
                received += 1
        except Exception:
            pass
        assert received < 400
        code = server.proc.wait(30)
        assert code != 0
        assert time.monotonic() - killed < 15
        deadline = time.monotonic() + 10
        while _alive(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(engine) and not _alive(worker)
        assert "worker rank 1 (exit code -9) died" in server.read_log()
    finally:
        server.stop()
