"""The machine's read bandwidth, as the attention benchmark's yardstick.

    python bench/kernels/bandwidth.py [--threads N]

Reads a 1 GiB fp32 tensor with torch.sum (streaming read, negligible
compute) and copies it (read + write); prints GB/s, best of 5.
"""
from __future__ import annotations

import argparse
import time

import torch


def best_of(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def read_gbps(repeat: int = 5) -> float:
    """GB/s of a 1 GiB fp32 sum (a streaming read), best of `repeat`."""
    x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)
    return x.numel() * 4 / best_of(lambda: x.sum(), repeat) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)  # 1 GiB
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    read = nbytes / best_of(lambda: x.sum()) / 1e9
    copy = 2 * nbytes / best_of(lambda: y.copy_(x)) / 1e9
    print(f"threads={args.threads} read {read:.1f} GB/s, copy (read+write) {copy:.1f} GB/s")


if __name__ == "__main__":
    main()
