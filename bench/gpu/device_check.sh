#!/usr/bin/env bash
# One pass on a lent GPU machine (see bench/RESULTS.md): build the CUDA
# extension against that machine's torch, run the GPU kernel tests and the
# engine's GPU tests, then the GPU kernel and engine benchmarks. Logs and the benchmark table go to $OUT.
#   bash bench/gpu/device_check.sh [--no-triton-tests]
# (with `bash bench/gpu/fetch_wheels.sh` run here first and `.whl` carried,
# the served GPU test gets the server's packages)
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
t0=$(date +%s)
since() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
python3 -c 'import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, "triton", triton.__version__)'
nvcc --version | tail -1

# The server's packages this machine lacks, if carried (bench/gpu/fetch_wheels.sh
# made .whl/ and the run named it in `carry`): the served GPU test needs them.
DEPS=""
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/deps .whl/*.whl && DEPS=/tmp/deps
  since "carried wheels installed: $(ls .whl | wc -l)"
fi

since "CUDA build (sm_90a)"
rm -rf /tmp/whl /tmp/site
if VLLM_TARGET_DEVICE=cuda TORCH_CUDA_ARCH_LIST="9.0a" MAX_JOBS=16 \
   python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/whl . >"$OUT/build.log" 2>&1; then
  mkdir -p /tmp/site && (cd /tmp/site && python3 -m zipfile -e /tmp/whl/vllm-*.whl .)
  export PYTHONPATH=/tmp/site${DEPS:+:$DEPS}
  since "built"
  python3 -c 'import vllm; print(vllm.__version__, vllm.build_info())'
  since "CUDA kernel tests"
  python3 -m pytest -q -m cuda -p no:cacheprovider tests/kernels/test_ops_cuda.py \
    tests/kernels/test_layernorm_cuda.py tests/kernels/test_attention_cuda.py \
    tests/kernels/test_moe_cuda.py tests/kernels/test_awq_cuda.py tests/kernels/test_mla_cuda.py \
    >"$OUT/pytest_cuda.log" 2>&1
  tail -n 40 "$OUT/pytest_cuda.log"
  since "the engine on the GPU (random-initialised checkpoints vs transformers, graphs, eager)"
  timeout 300 python3 -m pytest -q -m cuda -p no:cacheprovider tests/engine/test_gpu_engine.py \
    >"$OUT/pytest_gpu_engine.log" 2>&1
  tail -n 40 "$OUT/pytest_gpu_engine.log"
else
  tail -n 60 "$OUT/build.log"
  export PYTHONPATH=$PWD/python   # the Triton kernel needs no compiled vllm
fi

if [ "${1:-}" != --no-triton-tests ]; then
  since "Triton decode kernel compiled for the GPU"
  python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_attention_cuda.py \
    >"$OUT/pytest_triton.log" 2>&1
  tail -n 25 "$OUT/pytest_triton.log"
fi

if [ "${PYTHONPATH%%:*}" = /tmp/site ]; then
  since "GPU kernel benchmarks"
  timeout 180 python3 bench/kernels/cuda_bench.py --out "$OUT/cuda_bench.md"
  since "the engine against transformers on this GPU"
  timeout 300 python3 bench/e2e/gpu_engine.py --out "$OUT/gpu_engine.json"
fi
since "done"
