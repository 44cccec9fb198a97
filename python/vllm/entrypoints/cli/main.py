"""The `vllm` command. For now: --version [--verbose] and collect-env."""
from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm", description=__doc__)
    parser.add_argument("--version", action="store_true",
                        help="print the version (with --verbose: the build record)")
    parser.add_argument("--verbose", action="store_true",
                        help="with --version, print the build record too")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("collect-env", help="print the build record and the runtime")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "collect-env":
        from vllm.collect_env import main as collect_env_main
        collect_env_main()
        return 0
    if args.version:
        import vllm
        print(vllm.__version__)
        if args.verbose:
            print(json.dumps(vllm.build_info(), indent=2))
        return 0
    _parser().print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
