#!/usr/bin/env bash
# Wheels a lent GPU machine lacks for the engine's GPU tests that serve
# (its image has torch, transformers, tokenizers, httpx, anyio, msgpack and
# prometheus-client, but no gguf, fastapi, uvicorn, pydantic, pyzmq or
# openai, per the device tool's list of its packages):
# downloaded here, for its Python 3.12, into .whl/ (git-ignored), which a
# `run` carries (`carry: [".whl"]`) and device_check.sh installs first.
#   bash bench/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  gguf fastapi starlette annotated-doc pydantic pydantic-core annotated-types \
  typing-inspection uvicorn h11 pyzmq openai jiter distro sniffio httpx2 httpcore2 \
  opentelemetry-api truststore
du -sh .whl
