// Picks the kernel table for the running CPU (compiled for the baseline ISA).
//
// Only variants that were compiled in (VLLM_BUILT_<ISA>) are candidates, and
// only those the CPU reports support for: an older CPU falls back to AVX2 or
// scalar code instead of dying of an illegal instruction.
#include <atomic>
#include <cstring>
#include <string>

#include "kernel_table.h"

namespace vllm::cpu {
namespace {

struct Variant {
  const char* name;
  const KernelTable& (*table)();
  bool (*cpu_supports)();
};

bool cpu_has_avx512() {
  // The AVX-512 variant may use BF16/VNNI instructions when the compiler had
  // them (VLLM_AVX512_BF16), so it needs them at run time too.
  bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#if defined(VLLM_AVX512_BF16)
  ok = ok && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
#endif
  return ok;
}
bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
bool always() { return true; }

// Best first.
const Variant kVariants[] = {
#if defined(VLLM_BUILT_AVX512)
    {"avx512", &avx512::kernel_table, &cpu_has_avx512},
#endif
#if defined(VLLM_BUILT_AVX2)
    {"avx2", &avx2::kernel_table, &cpu_has_avx2},
#endif
#if defined(VLLM_BUILT_SCALAR)
    {"scalar", &scalar::kernel_table, &always},
#endif
};

const KernelTable* best_supported() {
  for (const Variant& v : kVariants)
    if (v.cpu_supports()) return &v.table();
  return nullptr;
}

std::atomic<const KernelTable*> g_active{best_supported()};

std::string join_names(bool only_supported) {
  std::string out;
  for (const Variant& v : kVariants) {
    if (only_supported && !v.cpu_supports()) continue;
    if (!out.empty()) out += ",";
    out += v.name;
  }
  return out;
}

}  // namespace

const KernelTable& active_kernels() { return *g_active.load(std::memory_order_acquire); }

bool set_active_isa(const char* isa) {
  if (std::strcmp(isa, "auto") == 0) {
    const KernelTable* best = best_supported();
    if (!best) return false;
    g_active.store(best, std::memory_order_release);
    return true;
  }
  for (const Variant& v : kVariants) {
    if (std::strcmp(v.name, isa) == 0 && v.cpu_supports()) {
      g_active.store(&v.table(), std::memory_order_release);
      return true;
    }
  }
  return false;
}

const char* supported_isas() {
  static const std::string names = join_names(true);
  return names.c_str();
}

const char* built_isas() {
  static const std::string names = join_names(false);
  return names.c_str();
}

}  // namespace vllm::cpu
