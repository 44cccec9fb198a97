"""scikit-build-core dynamic-metadata provider: version suffix and torch pin.

The version carries the target device (+cpu, +cu130, +rocm52, +openvino...)
and compiled builds pin the torch they were built against, since the
extension's C++ ABI only fits that torch. A bad setting stops the build here,
before CMake, with the one-line message from build_env.
"""
from __future__ import annotations

import os
import sys

import build_env


def dynamic_metadata(settings, project):
    try:
        config = build_env.resolve()
    except build_env.BuildConfigError as exc:
        # SystemExit instead of a traceback: pip then shows just this line.
        print(f"vllm build configuration error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"vllm build: VLLM_TARGET_DEVICE={config.target_device} "
          f"({config.detection_reason}); version {config.version}",
          file=sys.stderr)
    if not config.verbose:
        # `cmake --build` turns verbose on when VERBOSE merely exists (even
        # VERBOSE=0); the spec's VERBOSE is an integer flag, so drop it.
        os.environ.pop("VERBOSE", None)
    fragment = {"version": config.version}
    if config.torch is not None and config.target_device not in build_env.PURE_PYTHON_DEVICES:
        public = config.torch.version.split("+")[0]
        fragment["dependencies"] = [f"torch=={public}"]
    else:
        fragment["dependencies"] = []
    return fragment
