"""The machine's fp32 FMA peak for one ISA: the yardstick of the AVX2 GEMMs.

    python bench/kernels/fma_peak.py [--isa avx2|avx512] [--threads N]

Compiles (with the system C compiler, into a temporary folder) a loop of
independent fused multiply-adds, 12 accumulators of 8 (AVX2) or 16
(AVX-512) floats so the FMA latency is hidden, and runs it on N OpenMP
threads; prints GFLOP/s, best of 5 runs of ~0.3 s. Nothing else is timed:
no loads, no stores inside the loop.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

_SOURCE = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#ifdef WIDE
typedef __m512 V;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define LANES 16
#else
typedef __m256 V;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define LANES 8
#endif
int main(int argc, char** argv) {
  const long iters = 20000000;
  double best = 0;
  for (int run = 0; run < 5; ++run) {
    float sink = 0;
    double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
    {
      /* twelve named accumulators (an array would live on the stack) */
      const float t = 0.001f * omp_get_thread_num();
      V a0 = SET1(t), a1 = SET1(t + 1), a2 = SET1(t + 2), a3 = SET1(t + 3), a4 = SET1(t + 4),
        a5 = SET1(t + 5), a6 = SET1(t + 6), a7 = SET1(t + 7), a8 = SET1(t + 8),
        a9 = SET1(t + 9), a10 = SET1(t + 10), a11 = SET1(t + 11);
      const V b = SET1(0.999999f), c = SET1(1e-7f);
      for (long it = 0; it < iters; ++it) {
        a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);
        a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);
        a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);
      }
      V s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));
      s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));
      float out[LANES];
      memcpy(out, &s, sizeof(out));
      sink += out[0];
    }
    double seconds = omp_get_wtime() - t0;
    double gflops = 2.0 * LANES * 12 * iters * omp_get_max_threads() / seconds / 1e9;
    if (gflops > best) best = gflops;
    if (sink == 12345.f) printf("#");
  }
  printf("%.1f\n", best);
  return 0;
}
"""


def fma_peak_gflops(isa: str = "avx2", threads: int | None = None) -> float:
    """Measured fp32 FMA GFLOP/s on `threads` threads (default: all)."""
    flags = ["-mavx2", "-mfma"] if isa == "avx2" else ["-mavx512f", "-mfma", "-DWIDE"]
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "fma.c"), os.path.join(tmp, "fma")
        with open(src, "w") as f:
            f.write("#include <string.h>\n" + _SOURCE)
        subprocess.run(["cc", "-O3", "-fopenmp", *flags, src, "-o", exe], check=True)
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        out = subprocess.run([exe], check=True, capture_output=True, text=True, env=env).stdout
        return float(out.strip().lstrip("#"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--isa", choices=["avx2", "avx512"], default="avx2")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(f"fp32 FMA peak ({args.isa}, threads={args.threads or os.cpu_count()}): "
          f"{fma_peak_gflops(args.isa, args.threads)} GFLOP/s")


if __name__ == "__main__":
    main()
