"""The Ray executor (distributed_executor_backend="ray") on a local Ray
cluster the test starts (`ray start --head` on this machine, no dashboard,
no other machine), joined through RAY_ADDRESS: TP=2 (rank 0 in
the engine core, rank 1 an actor), PP=2 with every rank an actor, and the
compiled graph, each against one process (greedy fp32 and seeded tokens,
prompt logprobs); a bundle the placement group lacks refused with a clear
line (settings refused before Ray starts: test_ray_settings.py); a killed
actor fails the next step at once, naming its rank."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.distributed.parallel_runs import (assert_same_generation, default_tokenizer,
                                             run_engine, save_random)
from tests.utils import clean_env

pytestmark = pytest.mark.slow  # a Ray cluster and engines in fresh processes: CI's slow step

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama3l")
    save_random(folder, default_tokenizer(), "LlamaConfig", "LlamaForCausalLM",
                num_key_value_heads=2, num_hidden_layers=3)
    return folder


@pytest.fixture(scope="module")
def one_process(three_layers):
    return run_engine(three_layers)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node on this machine with 2 CPUs; its address for RAY_ADDRESS
    (on this machine's own address, which Ray's drivers use to find the
    local node)."""
    from tests.entrypoints.server import free_port
    ip = ray.util.get_node_ip_address()
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    # a throw-away local cluster: Ray's token authentication off (its
    # default for `ray start` writes a token under ~/.ray)
    env = clean_env(RAY_AUTH_MODE="disabled")
    started = subprocess.run(
        [exe, "start", "--head", "--node-ip-address", ip, "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
         "--object-store-memory", str(100 << 20), "--temp-dir", str(temp)],
        capture_output=True, text=True, timeout=120, env=env)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield f"{ip}:{port}"
    finally:
        subprocess.run([exe, "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("tp,pp,env", [
    (2, 1, {}),  # rank 0 in the engine core, rank 1 an actor
    (1, 2, {"VLLM_USE_RAY_SPMD_WORKER": "1"}),  # both stages actors
    (1, 2, {"VLLM_USE_RAY_SPMD_WORKER": "1", "VLLM_USE_RAY_COMPILED_DAG": "1"}),
], ids=["tp2", "pp2-spmd", "pp2-compiled-graph"])
def test_ray_ranks_match_one_process(three_layers, one_process, ray_cluster, tp, pp, env):
    other = run_engine(three_layers, tp=tp, pp=pp, backend="ray", RAY_ADDRESS=ray_cluster,
                       **env)
    assert_same_generation(one_process, other)
    if not env:
        assert other["heads"] == 2  # rank 0's half of the query heads, in the engine core


def test_without_an_address_the_engine_starts_its_own_ray(three_layers, one_process):
    other = run_engine(three_layers, tp=2, backend="ray")
    assert_same_generation(one_process, other)


def _engine_error(folder, ray_cluster, code: str, **env: str) -> str:
    script = ("from vllm import LLM\n"
              f"llm = LLM({str(folder)!r}, dtype='float32', tensor_parallel_size=2, "
              "distributed_executor_backend='ray')\n" + code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1",
                                                    RAY_ADDRESS=ray_cluster, **env))
    return out.stdout + out.stderr


def test_a_bundle_the_placement_group_lacks_is_refused(three_layers, ray_cluster):
    # known only once the placement group exists
    text = _engine_error(three_layers, ray_cluster, "", VLLM_RAY_BUNDLE_INDICES="0,5")
    assert "the placement group has bundles 0..1" in text, text[-3000:]


def test_a_killed_actor_fails_the_next_step_naming_its_rank(three_layers, ray_cluster):
    code = """
import os, signal, time
from vllm import SamplingParams
params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
llm.generate({"prompt_token_ids": [1, 2, 3]}, params, use_tqdm=False)
executor = llm.llm_engine.engine_core.worker
ip, pid = executor.pids[1]
os.kill(pid, signal.SIGKILL)
start = time.monotonic()
try:
    llm.generate({"prompt_token_ids": [1, 2, 3]}, params, use_tqdm=False)
except RuntimeError as exc:
    print("FAILED_IN", time.monotonic() - start, exc)
"""
    text = _engine_error(three_layers, ray_cluster, code)
    line = next((line for line in text.splitlines() if line.startswith("FAILED_IN")), None)
    assert line is not None, text[-3000:]
    assert float(line.split()[1]) < 5
    assert "Ray worker rank 1 (pid" in line and "died" in line


def test_without_ray_installed_the_error_says_how_to_get_it(monkeypatch):
    from vllm.executor import ray_executor
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"needs the ray package: pip install ray"):
        ray_executor._import_ray()
