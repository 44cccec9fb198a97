// Checks of the MLA ops (concat_and_cache_mla, mla_decode_kvcache,
// mla_prefill_kvcache), shared by every device's bindings so bad input gets
// the same message everywhere. Block-table values are checked by the CPU
// bindings only (on a GPU they stay on the device).
#pragma once

#include <string>

#include "cache_checks.h"
#include "mla_args.h"

namespace vllm {

inline void check_latent_cache(const at::Tensor& kv_cache, const char* op) {
  TORCH_CHECK(kv_cache.dim() == 3 && kv_cache.is_contiguous(), op,
              ": kv_cache must be a contiguous [num_blocks, block_size, latent_dim] tensor, "
              "got ", kv_cache.sizes());
}

struct ConcatMlaShape {
  int64_t tokens, lora, rope, c_stride, pe_stride;
};

inline ConcatMlaShape check_concat_and_cache_mla(const at::Tensor& kv_c, const at::Tensor& k_pe,
                                                 const at::Tensor& kv_cache,
                                                 const at::Tensor& slot_mapping,
                                                 const std::string& kv_cache_dtype) {
  constexpr const char* op = "concat_and_cache_mla";
  check_kv_cache_dtype(kv_cache_dtype, op);
  check_latent_cache(kv_cache, op);
  check_same_dtype_device(kv_c, kv_cache, op, "kv_c");
  check_same_dtype_device(k_pe, kv_cache, op, "k_pe");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1, op,
              ": slot_mapping must be a 1-D int64 tensor");
  TORCH_CHECK(kv_c.dim() == 2 && k_pe.dim() == 2, op, ": kv_c and k_pe must be 2-D, got ",
              kv_c.sizes(), " and ", k_pe.sizes());
  ConcatMlaShape s{};
  s.tokens = slot_mapping.size(0);
  s.lora = kv_c.size(1);
  s.rope = k_pe.size(1);
  TORCH_CHECK(kv_c.size(0) == s.tokens && k_pe.size(0) == s.tokens, op, ": ", s.tokens,
              " slots but kv_c has ", kv_c.size(0), " rows and k_pe ", k_pe.size(0));
  TORCH_CHECK(s.lora + s.rope == kv_cache.size(2), op, ": kv_c (", s.lora, ") + k_pe (", s.rope,
              ") elements do not fill a cached latent of ", kv_cache.size(2));
  if (s.tokens > 0) {
    s.c_stride = row_stride(kv_c, op, "kv_c");
    s.pe_stride = row_stride(k_pe, op, "k_pe");
  }
  return s;
}

// Shapes, dtypes and strides of an MLA attention call; the args minus the
// device pointers of the tables (the caller fills query_start_loc).
inline MlaAttentionArgs check_mla_attention(const char* op, at::Tensor& out,
                                            const at::Tensor& query, const at::Tensor& kv_cache,
                                            double scale, const at::Tensor& block_tables,
                                            const at::Tensor& seq_lens, int64_t num_seqs) {
  check_latent_cache(kv_cache, op);
  TORCH_CHECK(query.dim() == 3 && out.dim() == 3, op,
              ": query and out must be [tokens, num_heads, dim], got ", query.sizes(), " and ",
              out.sizes());
  const int64_t latent = kv_cache.size(2), v_dim = out.size(2);
  TORCH_CHECK(query.size(2) == latent, op, ": query heads have ", query.size(2),
              " elements but the cached latents ", latent);
  TORCH_CHECK(out.size(0) == query.size(0) && out.size(1) == query.size(1), op, ": out ",
              out.sizes(), " does not match query ", query.sizes());
  TORCH_CHECK(v_dim >= 1 && v_dim <= latent, op, ": out's head size ", v_dim,
              " must lie in [1, latent_dim ", latent, "]");
  TORCH_CHECK(latent % kMlaDimMultiple == 0 && v_dim % kMlaDimMultiple == 0, op,
              ": latent_dim (", latent, ") and v_dim (", v_dim, ") must be multiples of ",
              kMlaDimMultiple);
  TORCH_CHECK(latent <= kMlaMaxLatentDim, op, ": latent_dim ", latent,
              " is above the kernels' ", kMlaMaxLatentDim);
  check_same_dtype_device(query, kv_cache, op, "query");
  check_same_dtype_device(out, kv_cache, op, "out");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.dim() == 2 &&
                  block_tables.is_contiguous() && block_tables.size(0) == num_seqs,
              op, ": block_tables must be a contiguous int32 [", num_seqs,
              ", max_blocks] tensor, got ", block_tables.sizes());
  TORCH_CHECK(seq_lens.scalar_type() == at::kInt && seq_lens.dim() == 1 &&
                  seq_lens.is_contiguous() && seq_lens.size(0) == num_seqs,
              op, ": seq_lens must be a contiguous int32 [", num_seqs, "] tensor");
  TORCH_CHECK(block_tables.device() == kv_cache.device() && seq_lens.device() == kv_cache.device(),
              op, ": block_tables and seq_lens must be on the cache's device");
  MlaAttentionArgs a{};
  a.out = out.data_ptr();
  a.query = query.data_ptr();
  a.kv_cache = kv_cache.data_ptr();
  a.block_tables = block_tables.data_ptr<int32_t>();
  a.block_table_stride = block_tables.size(1);
  a.seq_lens = seq_lens.data_ptr<int32_t>();
  a.num_seqs = num_seqs;
  a.num_query_tokens = query.size(0);
  a.num_heads = query.size(1);
  a.latent_dim = latent;
  a.v_dim = v_dim;
  a.block_size = kv_cache.size(1);
  a.query_token_stride = token_stride(query, 1, op, "query");
  a.out_token_stride = token_stride(out, 1, op, "out");
  a.scale = float(scale);
  a.dtype = kernel_dtype(query, op);
  return a;
}

inline void check_mla_query_start_loc(const char* op, const at::Tensor& query_start_loc,
                                      const at::Tensor& query, int64_t num_seqs) {
  TORCH_CHECK(query_start_loc.scalar_type() == at::kInt && query_start_loc.dim() == 1 &&
                  query_start_loc.is_contiguous() && query_start_loc.size(0) == num_seqs + 1,
              op, ": query_start_loc must be a contiguous int32 [", num_seqs + 1, "] tensor");
  TORCH_CHECK(query_start_loc.device() == query.device(), op,
              ": query_start_loc must be on the query's device");
}

}  // namespace vllm
