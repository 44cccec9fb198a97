// CPU bindings of the MLA ops: concat_and_cache_mla (writes each token's
// latent and rotated key part into its slot: pure data movement, baseline
// ISA) and mla_decode_kvcache / mla_prefill_kvcache (checks, then the
// active ISA variant's mla_attention).
#include <cstring>
#include <torch/library.h>

#include "../core/mla_checks.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {
namespace {

// The block tables index the cache: their values are checked on the host
// (shapes: check_mla_attention), so a bad table is an error, not a wild read.
void check_mla_tables(const char* op, const at::Tensor& kv_cache,
                      const at::Tensor& block_tables, const at::Tensor& seq_lens,
                      int64_t num_seqs) {
  const int64_t num_blocks = kv_cache.size(0), block_size = kv_cache.size(1);
  const int64_t max_blocks = block_tables.size(1);
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int32_t* table = block_tables.data_ptr<int32_t>();
  for (int64_t i = 0; i < num_seqs; ++i) {
    TORCH_CHECK(lens[i] >= 0 && lens[i] <= max_blocks * block_size, op, ": seq_lens[", i,
                "]=", lens[i], " needs more blocks than block_tables holds");
    const int64_t used = (int64_t(lens[i]) + block_size - 1) / block_size;
    for (int64_t b = 0; b < used; ++b) {
      const int32_t block = table[i * max_blocks + b];
      TORCH_CHECK(block >= 0 && block < num_blocks, op, ": block_tables[", i, "][", b, "]=",
                  block, " is outside the cache's ", num_blocks, " blocks");
    }
  }
}

}  // namespace

void concat_and_cache_mla(const at::Tensor& kv_c, const at::Tensor& k_pe, at::Tensor& kv_cache,
                          const at::Tensor& slot_mapping, const std::string& kv_cache_dtype,
                          const at::Tensor& scale) {
  constexpr const char* op = "concat_and_cache_mla";
  TORCH_CHECK(kv_cache.device().is_cpu(), op, ": kv_cache must be on the CPU");
  const ConcatMlaShape s =
      check_concat_and_cache_mla(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype);
  const int64_t tokens = s.tokens, lora = s.lora, rope = s.rope;
  if (tokens == 0) return;
  const int64_t c_stride = s.c_stride, pe_stride = s.pe_stride;
  const int64_t capacity = kv_cache.size(0) * kv_cache.size(1);
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  for (int64_t t = 0; t < tokens; ++t) {
    TORCH_CHECK(slots[t] < capacity, op, ": slot ", slots[t], " of token ", t,
                " is beyond the cache's ", capacity, " slots");
  }
  const int64_t esize = kv_cache.element_size();
  const char* c_src = static_cast<const char*>(kv_c.data_ptr());
  const char* pe_src = static_cast<const char*>(k_pe.data_ptr());
  char* dst = static_cast<char*>(kv_cache.data_ptr());
  const int64_t row = kv_cache.size(2);
#pragma omp parallel for schedule(static) if (tokens * row * esize >= (1 << 18))
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0) continue;  // padding
    char* slot = dst + slots[t] * row * esize;
    std::memcpy(slot, c_src + t * c_stride * esize, lora * esize);
    std::memcpy(slot + lora * esize, pe_src + t * pe_stride * esize, rope * esize);
  }
}

void mla_decode_kvcache(at::Tensor& out, const at::Tensor& query, const at::Tensor& kv_cache,
                        double scale, const at::Tensor& block_tables,
                        const at::Tensor& seq_lens) {
  constexpr const char* op = "mla_decode_kvcache";
  const int64_t num_seqs = query.dim() == 3 ? query.size(0) : 0;
  MlaAttentionArgs a =
      check_mla_attention(op, out, query, kv_cache, scale, block_tables, seq_lens, num_seqs);
  check_mla_tables(op, kv_cache, block_tables, seq_lens, num_seqs);
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  for (int64_t i = 0; i < num_seqs; ++i)
    TORCH_CHECK(lens[i] >= 1, op, ": sequence ", i, " has no cached position to attend to");
  if (num_seqs == 0) return;
  cpu::active_kernels().mla_attention(a);
}

void mla_prefill_kvcache(at::Tensor& out, const at::Tensor& query, const at::Tensor& kv_cache,
                         double scale, const at::Tensor& block_tables,
                         const at::Tensor& query_start_loc, const at::Tensor& seq_lens) {
  constexpr const char* op = "mla_prefill_kvcache";
  const int64_t num_seqs = seq_lens.dim() == 1 ? seq_lens.size(0) : 0;
  MlaAttentionArgs a =
      check_mla_attention(op, out, query, kv_cache, scale, block_tables, seq_lens, num_seqs);
  check_mla_tables(op, kv_cache, block_tables, seq_lens, num_seqs);
  check_mla_query_start_loc(op, query_start_loc, query, num_seqs);
  const int32_t* starts = query_start_loc.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  TORCH_CHECK(starts[0] == 0 && starts[num_seqs] == query.size(0), op,
              ": query_start_loc must run from 0 to the number of query tokens (",
              query.size(0), ")");
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t q_len = starts[i + 1] - starts[i];
    TORCH_CHECK(q_len >= 0 && q_len <= lens[i], op, ": sequence ", i, " has ", q_len,
                " query tokens but only ", lens[i], " positions");
  }
  if (num_seqs == 0 || query.size(0) == 0) return;
  a.query_start_loc = starts;
  cpu::active_kernels().mla_attention(a);
}

}  // namespace vllm::cpu_ops

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("concat_and_cache_mla", &vllm::cpu_ops::concat_and_cache_mla);
  ops.impl("mla_decode_kvcache", &vllm::cpu_ops::mla_decode_kvcache);
  ops.impl("mla_prefill_kvcache", &vllm::cpu_ops::mla_prefill_kvcache);
}
