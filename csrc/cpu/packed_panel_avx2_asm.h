// The AVX2 panel kernel's multi-row blocks, 4-6 rows x 16 columns over
// every k pair, as one inline-assembly loop. Included by
// packed_panel_avx2.h only.
//
// Why assembly: the 6-row block needs all 16 ymm registers (12
// accumulators, 2 widened weight vectors, 1 broadcast, the high-half mask),
// and GCC's allocation of the intrinsics version moved registers around,
// reloaded the mask from the stack and kept six row pointers, each advanced
// every k pair: 57 instructions for 24 FMAs, 92-95 GFLOP/s on one core
// against a measured 131.5 peak (72%). Here: one x pointer, the rows
// addressed as x + {0, 1, 2, 3, 4, 5} * stride through three stride
// registers, 44 instructions a k pair, 112-119 GFLOP/s (85-90%), even with
// the panels streaming from memory; the same products summed in the same
// order, so the same bits. Unrolling two k pairs an iteration gained
// nothing. Only register and memory-load forms of VEX instructions: a shift
// with a memory source exists in AVX-512 only (the assembler silently picks
// the EVEX encoding for it, which an AVX2 CPU cannot run).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

static_assert(kPackedLinearPanel == 48, "the loops below step 192 bytes (48 pairs) a k pair");

// One broadcast of a row's x (at `addr`) and its two FMAs.
#define VLLM_RX16_ROW(addr, acc0, acc1)             \
  "vbroadcastss " addr ", %%ymm14\n\t"              \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm" acc0 "\n\t" \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm" acc1 "\n\t"
// Rows 0-3, 0-4 or 0-5 with x at byte offset `o` (rows x + r * stride:
// 0, s1, 2 s1, s3, 4 s1, s5).
#define VLLM_RX16_ROWS4(o)                        \
  VLLM_RX16_ROW(o "(%[x])", "0", "1")             \
  VLLM_RX16_ROW(o "(%[x],%[s1],1)", "2", "3")     \
  VLLM_RX16_ROW(o "(%[x],%[s1],2)", "4", "5")     \
  VLLM_RX16_ROW(o "(%[x],%[s3],1)", "6", "7")
#define VLLM_RX16_ROWS5(o) VLLM_RX16_ROWS4(o) VLLM_RX16_ROW(o "(%[x],%[s1],4)", "8", "9")
#define VLLM_RX16_ROWS6(o) VLLM_RX16_ROWS5(o) VLLM_RX16_ROW(o "(%[x],%[s5],1)", "10", "11")
// One k pair: the even k (low halves shifted up into ymm12/13), then the
// odd k (low halves cleared); then the pointers step on.
#define VLLM_RX16_KPAIR(ROWS)              \
  "vmovdqu (%[w]), %%ymm12\n\t"            \
  "vmovdqu 32(%[w]), %%ymm13\n\t"          \
  "vpslld $16, %%ymm12, %%ymm12\n\t"       \
  "vpslld $16, %%ymm13, %%ymm13\n\t"       \
  ROWS("")                                 \
  "vpand (%[w]), %%ymm15, %%ymm12\n\t"     \
  "vpand 32(%[w]), %%ymm15, %%ymm13\n\t"   \
  ROWS("4")                                \
  "add $192, %[w]\n\t"                     \
  "add $8, %[x]\n\t"
// The whole block: zero the accumulators, the prefetching k pairs, the
// rest, store the accumulators.
#define VLLM_RX16_ASM(ROWS)                                                                    \
  __asm__ volatile(                                                                            \
      "vxorps %%ymm0, %%ymm0, %%ymm0\n\t"                                                      \
      "vxorps %%ymm1, %%ymm1, %%ymm1\n\t"                                                      \
      "vxorps %%ymm2, %%ymm2, %%ymm2\n\t"                                                      \
      "vxorps %%ymm3, %%ymm3, %%ymm3\n\t"                                                      \
      "vxorps %%ymm4, %%ymm4, %%ymm4\n\t"                                                      \
      "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"                                                      \
      "vxorps %%ymm6, %%ymm6, %%ymm6\n\t"                                                      \
      "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"                                                      \
      "vxorps %%ymm8, %%ymm8, %%ymm8\n\t"                                                      \
      "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"                                                      \
      "vxorps %%ymm10, %%ymm10, %%ymm10\n\t"                                                   \
      "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"                                                   \
      "vpcmpeqd %%ymm15, %%ymm15, %%ymm15\n\t"                                                 \
      "vpslld $16, %%ymm15, %%ymm15\n\t" /* 0xffff0000 in every lane */                       \
      "test %[pf_n], %[pf_n]\n\t"                                                              \
      "jle 2f\n\t"                                                                             \
      "1:\n\t"                                                                                 \
      "prefetcht1 (%[pf])\n\t"                                                                 \
      "add $64, %[pf]\n\t" VLLM_RX16_KPAIR(ROWS)                                               \
      "dec %[pf_n]\n\t"                                                                        \
      "jnz 1b\n\t"                                                                             \
      "2:\n\t"                                                                                 \
      "test %[n], %[n]\n\t"                                                                    \
      "jle 4f\n\t"                                                                             \
      "3:\n\t" VLLM_RX16_KPAIR(ROWS)                                                           \
      "dec %[n]\n\t"                                                                           \
      "jnz 3b\n\t"                                                                             \
      "4:\n\t"                                                                                 \
      "vmovups %%ymm0, (%[acc])\n\t"                                                           \
      "vmovups %%ymm1, 32(%[acc])\n\t"                                                         \
      "vmovups %%ymm2, 64(%[acc])\n\t"                                                         \
      "vmovups %%ymm3, 96(%[acc])\n\t"                                                         \
      "vmovups %%ymm4, 128(%[acc])\n\t"                                                        \
      "vmovups %%ymm5, 160(%[acc])\n\t"                                                        \
      "vmovups %%ymm6, 192(%[acc])\n\t"                                                        \
      "vmovups %%ymm7, 224(%[acc])\n\t"                                                        \
      "vmovups %%ymm8, 256(%[acc])\n\t"                                                        \
      "vmovups %%ymm9, 288(%[acc])\n\t"                                                        \
      "vmovups %%ymm10, 320(%[acc])\n\t"                                                       \
      "vmovups %%ymm11, 352(%[acc])\n\t"                                                       \
      : [w] "+r"(w), [x] "+r"(x), [n] "+r"(rest), [pf_n] "+r"(prefetching), [pf] "+r"(prefetch) \
      : [s1] "r"(s1), [s3] "r"(s3), [s5] "r"(s5), [acc] "r"(acc)                              \
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",        \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc")

// acc (6 x 2 vectors, row-major; rows R.. unused) = rows x[r * x_stride +
// 0 .. 2 kpairs), r < R, . the 16 columns at `w` (k pairs 192 bytes apart);
// the first `prefetch_pairs` k pairs also prefetch one line each (into L2)
// from `prefetch` on. R is 4, 5 or 6: 8 to 12 accumulators, enough
// independent FMAs to cover their latency (4 cycles, 2 a cycle).
template <int R>
__attribute__((noinline)) void block_rx16(const float* x, int64_t x_stride, const uint32_t* w,
                                          int64_t kpairs, const char* prefetch,
                                          int64_t prefetch_pairs, __m256 (&acc)[6][2]) {
  static_assert(R >= 4 && R <= 6, "4 to 6 rows");
  const int64_t s1 = x_stride * int64_t(sizeof(float)), s3 = 3 * s1, s5 = 5 * s1;
  int64_t prefetching = prefetch_pairs < kpairs ? prefetch_pairs : kpairs;
  if (prefetching < 0) prefetching = 0;
  int64_t rest = kpairs - prefetching;
  if constexpr (R == 4) {
    VLLM_RX16_ASM(VLLM_RX16_ROWS4);
  } else if constexpr (R == 5) {
    VLLM_RX16_ASM(VLLM_RX16_ROWS5);
  } else {
    VLLM_RX16_ASM(VLLM_RX16_ROWS6);
  }
}

#undef VLLM_RX16_ASM
#undef VLLM_RX16_KPAIR
#undef VLLM_RX16_ROWS6
#undef VLLM_RX16_ROWS5
#undef VLLM_RX16_ROWS4
#undef VLLM_RX16_ROW
}  // namespace
}  // namespace vllm::cpu::VLLM_ISA_NS
