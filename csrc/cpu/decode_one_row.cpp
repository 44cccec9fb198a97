// fused_decode_layers' loop for one decode row, in one parallel region.
//
// Why: a batch-1 step is ~120 small projections (33-150 us each on
// SmolLM2) with serial work between them (norms; rotary, the cache write and
// attention: ~25 us a layer). On this project's 2-vCPU machines the read
// bandwidth is per core (one thread 14 GB/s, two 28), so every microsecond
// one core waits is bandwidth lost: the general loop opened a parallel
// region per projection (~3 us of fork and join each), and while thread 0
// ran the serial work the other thread spun.
//
// Here the team lives for the whole call: barriers between the steps, and
// while thread 0 runs a serial section the last thread prefetches the next
// projection's last panels into its L2 and runs them first (as does the
// first thread to finish a projection that another follows directly); the
// other panels are dealt out while the projection runs (UnitDeal), so no
// core waits long at the barrier. Thread 0 requests each serial section's
// cold inputs (the KV blocks, the norm weights) during the projection
// before it. Same kernels on the same panels: the same bits
// as the general loop (tests/kernels/test_decode_layers.py).
#include "decode_one_row.h"

#include <omp.h>

#include <array>
#include <atomic>
#include <exception>
#include <vector>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>

#include "cpu_ops.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {
namespace {

constexpr int64_t kPanel = cpu::kPackedLinearPanel;

// A packed weight as a stream of units that go to one thread whole: output
// panels (plain projections) or gate/up panel pairs (the gated MLP).
struct Stream {
  const char* base;
  int64_t units, unit_bytes;
};

Stream plain_stream(const cpu::LinearArgs& a) {
  return {static_cast<const char*>(a.weight), (a.n + kPanel - 1) / kPanel, a.k / 2 * kPanel * 4};
}

Stream gated_stream(const cpu::LinearArgs& a) {
  return {static_cast<const char*>(a.weight), (a.n / 2 + kPanel - 1) / kPanel,
          2 * (a.k / 2 * kPanel * 4)};
}

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Prefetches whole units of `s` into this core's L2, last unit first, from
// the last, until `stop()` or half the units are in; returns how
// many units are in completely. (Half: the others keep a share, and a
// thread's cached units still cost it L2 reads.)
template <typename Stop>
int64_t prefetch_tail(const Stream& s, Stop&& stop) {
  constexpr int64_t kBytesBetweenLooks = 16 * 64;
  int64_t got = 0;
  for (; got < s.units / 2; ++got) {
    const char* unit = s.base + (s.units - 1 - got) * s.unit_bytes;
    for (int64_t off = 0; off < s.unit_bytes; off += kBytesBetweenLooks) {
      if (stop()) return got;
      const int64_t end =
          off + kBytesBetweenLooks < s.unit_bytes ? off + kBytesBetweenLooks : s.unit_bytes;
      for (int64_t b = off; b < end; b += 64) __builtin_prefetch(unit + b, 0, 2);
    }
  }
  while (!stop()) spin_pause();
  return got;
}

// One projection's units, dealt out while it runs. Thread t starts on its
// own contiguous range (its weights one stream, prefetched ahead) and takes
// units from its front; a thread whose range is done takes units one at a
// time from the back of another's. Why: with a static split one core waited
// at the barrier after each projection, 0.55-0.63 ms of a ~9.3 ms step in
// all (DRAM does not serve two cores evenly, and the prefetching thread
// started each projection with panels in its L2); dealt, 0.25-0.33 ms, and
// the engine's batch-1 token 1.9% faster on AVX-512, 1.3% on AVX2 (session
// 21, bench/RESULTS.md).
class UnitDeal {
 public:
  explicit UnitDeal(int threads) : ranges_(size_t(threads)) {}

  // Thread t's own range [first, end). Every range is empty at each barrier
  // (a thread leaves only when it finds all empty), so a thread stealing
  // before its victim has opened its range for this projection finds it
  // empty and leaves: fewer steals, the same units.
  void open(int t, int64_t first, int64_t end) {
    ranges_[size_t(t)].next_end.store(pack(first, end), std::memory_order_release);
  }

  // The next unit of t's own range, and its range's end as it stood then.
  bool take_own(int t, int64_t* unit, int64_t* end) {
    std::atomic<uint64_t>& r = ranges_[size_t(t)].next_end;
    uint64_t v = r.load(std::memory_order_acquire);
    for (;;) {
      const int64_t next = low(v), last = high(v);
      if (next >= last) return false;
      if (r.compare_exchange_weak(v, pack(next + 1, last), std::memory_order_acq_rel)) {
        *unit = next;
        *end = last;
        return true;
      }
    }
  }

  // The last unit of the first other range that has one.
  bool steal(int t, int64_t* unit) {
    const int threads = int(ranges_.size());
    for (int i = 1; i < threads; ++i) {
      std::atomic<uint64_t>& r = ranges_[size_t((t + i) % threads)].next_end;
      uint64_t v = r.load(std::memory_order_acquire);
      for (;;) {
        const int64_t next = low(v), last = high(v);
        if (next >= last) break;
        if (r.compare_exchange_weak(v, pack(next, last - 1), std::memory_order_acq_rel)) {
          *unit = last - 1;
          return true;
        }
      }
    }
    return false;
  }

 private:
  struct alignas(64) Range {
    std::atomic<uint64_t> next_end{0};  // next unit (low half), range end (high half)
  };
  static uint64_t pack(int64_t next, int64_t end) {
    return uint64_t(uint32_t(next)) | (uint64_t(uint32_t(end)) << 32);
  }
  static int64_t low(uint64_t v) { return int64_t(uint32_t(v)); }
  static int64_t high(uint64_t v) { return int64_t(v >> 32); }
  std::vector<Range> ranges_;
};

}  // namespace

bool takes_packed_linear(const at::Tensor& x, const std::optional<at::Tensor>& packed) {
  return packed.has_value() && !packed->is_mkldnn() && packed->dim() == 4 &&
         x.scalar_type() == at::kBFloat16 && cpu::active_kernels().packed_linear != nullptr;
}

bool takes_packed_linear_gated(const at::Tensor& x, const std::optional<at::Tensor>& packed) {
  return packed.has_value() && !packed->is_mkldnn() && packed->dim() == 5 &&
         x.scalar_type() == at::kBFloat16 && x.stride(1) == 1 &&
         cpu::active_kernels().packed_linear_gated != nullptr;
}

namespace {

// The layers' side of one_row_loop_applies: what the general loop would
// run, for every layer: packed_linear for qkv, o and down, packed_linear_gated
// for gate/up; and one shape, as the buffers are shared.
bool layers_fit_one_row(const DecodeLayerTensors& layers) {
  const at::Tensor* first = &layers.weights[0];
  for (size_t l = 0; l < layers.key_caches.size(); ++l) {
    const std::optional<at::Tensor>* p = &layers.packed[l * kLinearsPerLayer];
    for (size_t i = 0; i < kLinearsPerLayer; ++i) {
      if (!p[i].has_value() || p[i]->is_mkldnn() || p[i]->dim() != (i == 2 ? 5 : 4)) return false;
    }
    const at::Tensor* w = &layers.weights[l * kWeightsPerLayer];
    for (size_t i : {1, 2, 4, 5}) {
      if (w[i].sizes() != first[i].sizes()) return false;
    }
  }
  return true;
}

// The buffers and checked arguments of the one-row loop, for rows shaped as
// `hidden_in` (every intermediate a contiguous bf16 row).
void build_one_row_state(const at::Tensor& hidden_in, const DecodeLayerTensors& layers,
                         const DecodeStep& step, OneRowState& state) {
  const size_t num_layers = layers.key_caches.size();
  const at::Tensor* w0 = &layers.weights[0];
  const auto options = hidden_in.options();
  state.residual = at::empty_like(hidden_in);
  state.normed = at::empty_like(hidden_in);  // layer 0's normalised input
  state.qkv = at::empty({1, w0[1].size(0)}, options);
  state.attn = at::empty({1, step.num_heads, step.head_size}, options);
  state.o = at::empty({1, w0[2].size(0)}, options);
  state.gated = at::empty({1, w0[4].size(0) / 2}, options);
  state.hidden = at::empty({1, w0[5].size(0)}, options);  // down's: the next layer's input
  const at::Tensor attn_rows = state.attn.view({1, step.num_heads * step.head_size});
  state.args.resize(num_layers);
  for (size_t l = 0; l < num_layers; ++l) {
    const std::optional<at::Tensor>* b = &layers.biases[l * kLinearsPerLayer];
    const std::optional<at::Tensor>* p = &layers.packed[l * kLinearsPerLayer];
    auto& a = state.args[l];
    a[0] = checked_packed_linear_args(state.qkv, l == 0 ? state.normed : state.hidden, *p[0], b[0]);
    a[1] = checked_packed_linear_args(state.o, attn_rows, *p[1], b[1]);
    a[2] = checked_packed_linear_gated_args(state.gated, state.o, *p[2], b[2]);
    a[3] = checked_packed_linear_args(state.hidden, state.gated, *p[3], b[3]);
  }
  const at::Tensor& kc0 = layers.key_caches[0];
  state.cache_block_bytes = kc0.numel() / kc0.size(0) * kc0.element_size();
  state.caches_contiguous = true;
  state.key_caches.clear();
  state.value_caches.clear();
  state.input_norms.clear();
  state.post_norms.clear();
  for (size_t l = 0; l < num_layers; ++l) {
    const at::Tensor* w = &layers.weights[l * kWeightsPerLayer];
    state.caches_contiguous = state.caches_contiguous && layers.key_caches[l].is_contiguous() &&
                              layers.value_caches[l].is_contiguous();
    state.key_caches.push_back(static_cast<const char*>(layers.key_caches[l].data_ptr()));
    state.value_caches.push_back(static_cast<const char*>(layers.value_caches[l].data_ptr()));
    state.input_norms.push_back(static_cast<const char*>(w[0].data_ptr()));
    state.post_norms.push_back(static_cast<const char*>(w[3].data_ptr()));
  }
  state.norm_bytes = w0[0].numel() * w0[0].element_size();
  state.built = true;
}

}  // namespace

bool one_row_loop_applies(const at::Tensor& hidden, const DecodeLayerTensors& layers,
                          OneRowState& state) {
  const cpu::KernelTable& kernels = cpu::active_kernels();
  if (hidden.size(0) != 1 || hidden.scalar_type() != at::kBFloat16 || hidden.stride(1) != 1 ||
      kernels.packed_linear == nullptr || kernels.packed_linear_gated == nullptr ||
      kernels.packed_linear_range == nullptr || kernels.packed_linear_gated_range == nullptr ||
      omp_get_max_threads() < 2 || omp_in_parallel()) {
    return false;
  }
  std::lock_guard<std::mutex> lock(state.mutex);
  if (!state.weights_fit.has_value()) state.weights_fit = layers_fit_one_row(layers);
  return *state.weights_fit;
}

std::tuple<at::Tensor, at::Tensor> one_row_layers(const at::Tensor& hidden_in,
                                                  const DecodeLayerTensors& layers,
                                                  const DecodeStep& step, OneRowState& state) {
  std::lock_guard<std::mutex> lock(state.mutex);
  if (!state.built || state.residual.size(1) != hidden_in.size(1)) {
    build_one_row_state(hidden_in, layers, step, state);
  }
  const size_t num_layers = layers.key_caches.size();
  const at::Tensor* w0 = &layers.weights[0];
  const int64_t q_size = step.num_heads * step.head_size;
  const int64_t kv_size = step.num_kv_heads * step.head_size;
  const at::Tensor unit_scale = at::ones({}, at::TensorOptions().dtype(at::kFloat));

  // The state's buffers, one per intermediate for every layer; the caller's
  // hidden_in is never written.
  at::Tensor& residual = state.residual;
  residual.copy_(hidden_in);
  at::Tensor& normed = state.normed;
  at::Tensor& attn = state.attn;
  at::Tensor& o = state.o;
  at::Tensor& hidden = state.hidden;
  at::Tensor q = state.qkv.narrow(1, 0, q_size);
  const std::optional<at::Tensor> k = state.qkv.narrow(1, q_size, kv_size);
  const at::Tensor q_heads = q.view({1, step.num_heads, step.head_size});
  const at::Tensor k_heads = k->view({1, step.num_kv_heads, step.head_size});
  const at::Tensor v_heads = state.qkv.narrow(1, q_size + kv_size, kv_size)
                                 .view({1, step.num_kv_heads, step.head_size});
  const std::vector<std::array<cpu::LinearArgs, kLinearsPerLayer>>& args = state.args;
  const cpu::Activation kind = gated_activation_kind(step.activation);
  const cpu::KernelTable& kernels = cpu::active_kernels();
  int64_t widest_k = 0;
  for (size_t i : {1, 2, 4, 5}) widest_k = w0[i].size(1) > widest_k ? w0[i].size(1) : widest_k;

  // What each serial section reads, cold after the weights went by: thread
  // 0, which runs the sections, requests it into its L2 while it works on
  // the projection before. Attention: the sequence's K and V blocks and the
  // position's cos/sin row; the norms: their weights. (Per layer, alternated
  // in one process: the cache write 6.5 -> 4.5 us, attention 9.7 -> 6.7.)
  const bool tables_ok = state.caches_contiguous && step.block_tables.scalar_type() == at::kInt &&
                         step.seq_lens.scalar_type() == at::kInt &&
                         step.positions.scalar_type() == at::kLong;
  const int32_t* table = tables_ok ? step.block_tables.data_ptr<int32_t>() : nullptr;
  int64_t blocks = tables_ok ? (int64_t(step.seq_lens.data_ptr<int32_t>()[0]) + step.block_size - 1) /
                                   step.block_size
                             : 0;
  if (blocks > step.block_tables.size(-1)) blocks = step.block_tables.size(-1);
  const int64_t cos_sin_bytes = step.cos_sin_cache.size(-1) * step.cos_sin_cache.element_size();
  const char* cos_sin = tables_ok ? static_cast<const char*>(step.cos_sin_cache.data_ptr()) +
                                        step.positions.data_ptr<int64_t>()[0] * cos_sin_bytes
                                  : nullptr;
  auto prefetch_bytes = [](const char* p, int64_t bytes) {  // never faults, whatever the address
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 2);
  };
  // What the serial section after projection `proj` (0-3) of layer l reads.
  auto warm = [&](size_t l, int proj) {
    if (proj == 0) {
      for (int64_t i = 0; i < blocks; ++i) {
        const int64_t offset = int64_t(table[i]) * state.cache_block_bytes;
        prefetch_bytes(state.key_caches[l] + offset, state.cache_block_bytes);
        prefetch_bytes(state.value_caches[l] + offset, state.cache_block_bytes);
      }
      if (cos_sin != nullptr) prefetch_bytes(cos_sin, cos_sin_bytes);
    } else if (proj == 1) {
      prefetch_bytes(state.post_norms[l], state.norm_bytes);
    } else if (proj == 3 && l + 1 < num_layers) {
      prefetch_bytes(state.input_norms[l + 1], state.norm_bytes);
    }
  };
  constexpr void (*kNoWork)() = nullptr;
  std::atomic<int64_t> finished{0};  // threads done with a projection, over all projections
  std::atomic<int64_t> done{0};      // serial sections finished
  std::atomic<int64_t> held{0};      // units of the next projection `holder` has in L2
  std::atomic<int> holder{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  UnitDeal deal(omp_get_max_threads());
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), threads = omp_get_num_threads();
    std::vector<float> scratch(widest_k);  // x widened to fp32 (AVX2)
    int64_t seq = 0;          // serial sections so far
    int64_t projections = 0;  // projections so far
    // This thread's place among those that finished the last projection
    // (0: first).
    int order = 0;
    // After a projection (or before the first): `work` (may be null) runs on
    // thread 0 once every thread's part of the projection is written, while
    // the last thread prefetches the tail of `next` (null after the last
    // projection) into its L2; between two projections with no serial
    // section, the thread that finished first prefetches instead of waiting
    // at the barrier (dealt units still end up to one unit apart: a SmolLM2
    // down-projection panel is 147 KiB, ~10 us). Every thread then learns
    // who holds how many of next's last units.
    auto between = [&](auto* work, const Stream* next) {
      const bool worker = t == 0;
      const bool prefetcher = threads > 1 && (work != nullptr ? t == threads - 1 : order == 0);
      if (work != nullptr) {
        ++seq;
        if (worker) {
          // every thread's part of the projection written
          while (finished.load(std::memory_order_acquire) < projections * threads) spin_pause();
          if (!failed.load(std::memory_order_relaxed)) {
            try {
              (*work)();
            } catch (...) {
              error = std::current_exception();
              failed.store(true, std::memory_order_relaxed);
            }
          }
          done.store(seq, std::memory_order_release);
        }
      }
      if (prefetcher && next != nullptr) {
        const int64_t everyone = projections * threads;
        const int64_t got = prefetch_tail(*next, [&] {
          return work != nullptr ? done.load(std::memory_order_acquire) >= seq
                                 : finished.load(std::memory_order_acquire) >= everyone;
        });
        held.store(got, std::memory_order_relaxed);
        holder.store(t, std::memory_order_relaxed);
      }
#pragma omp barrier
      return std::pair<int, int64_t>(holder.load(std::memory_order_relaxed),
                                     held.load(std::memory_order_relaxed));
    };
    // Units [0, units) of a projection by `compute(first, last, stream_end,
    // widen_x)`: the holder first runs the units it holds in cache (the last
    // ones), then the rest is dealt out; then this thread's finishing order.
    auto run_units = [&](int64_t units, std::pair<int, int64_t> cached, auto&& compute,
                         size_t layer, int proj) {
      const int64_t rest = units - cached.second;
      bool widen_x = true;
      if (t == cached.first && cached.second > 0) {
        compute(rest, units, units, widen_x);
        widen_x = false;
      }
      if (t == 0) warm(layer, proj);
      deal.open(t, rest * t / threads, rest * (t + 1) / threads);
      int64_t unit, end;
      while (deal.take_own(t, &unit, &end)) {
        compute(unit, unit + 1, end, widen_x);
        widen_x = false;
      }
      while (deal.steal(t, &unit)) {
        compute(unit, unit + 1, unit + 1, widen_x);
        widen_x = false;
      }
      ++projections;
      order = int(finished.fetch_add(1, std::memory_order_acq_rel) - (projections - 1) * threads);
    };
    auto plain = [&](const cpu::LinearArgs& a, std::pair<int, int64_t> cached, size_t layer,
                     int proj) {
      run_units((a.n + kPanel - 1) / kPanel, cached,
                [&](int64_t p0, int64_t p1, int64_t stream_end, bool widen_x) {
                  kernels.packed_linear_range(a, p0, p1, stream_end, scratch.data(), widen_x);
                }, layer, proj);
    };
    auto gated_mlp = [&](const cpu::LinearArgs& a, std::pair<int, int64_t> cached, size_t layer) {
      run_units((a.n / 2 + kPanel - 1) / kPanel, cached,
                [&](int64_t j0, int64_t j1, int64_t stream_end, bool widen_x) {
                  kernels.packed_linear_gated_range(a, kind, j0, j1, stream_end, scratch.data(),
                                                    widen_x);
                }, layer, 2);
    };
    for (size_t l = 0; l < num_layers; ++l) {
      const at::Tensor* w = &layers.weights[l * kWeightsPerLayer];
      const std::array<cpu::LinearArgs, kLinearsPerLayer>& a = args[l];
      auto input_norm = [&] {
        if (l == 0) {
          rms_norm(normed, hidden_in, w[0], step.epsilon);
        } else {
          fused_add_rms_norm(hidden, residual, w[0], step.epsilon);
        }
      };
      auto attention = [&] {
        at::Tensor key_cache = layers.key_caches[l], value_cache = layers.value_caches[l];
        rotary_embedding(step.positions, q, k, step.head_size, step.cos_sin_cache, step.is_neox);
        reshape_and_cache(k_heads, v_heads, key_cache, value_cache, step.slot_mapping, "auto",
                          unit_scale, unit_scale);
        paged_attention_v1(attn, q_heads, key_cache, value_cache, step.num_kv_heads, step.scale,
                           step.block_tables, step.seq_lens, step.block_size, step.max_seq_len,
                           std::nullopt, "auto", unit_scale, unit_scale, 0, 0, 0, 0, 0);
      };
      auto post_attention_norm = [&] { fused_add_rms_norm(o, residual, w[3], step.epsilon); };
      const Stream qkv_s = plain_stream(a[0]), o_s = plain_stream(a[1]),
                   gate_up_s = gated_stream(a[2]), down_s = plain_stream(a[3]);
      plain(a[0], between(&input_norm, &qkv_s), l, 0);
      plain(a[1], between(&attention, &o_s), l, 1);
      gated_mlp(a[2], between(&post_attention_norm, &gate_up_s), l);
      plain(a[3], between(kNoWork, &down_s), l, 3);
    }
    // the last down projection's output complete before the region ends
    between(kNoWork, nullptr);
  }
  if (error) std::rethrow_exception(error);
  // the state's buffers serve the next call
  return {hidden.clone(), residual.clone()};
}

}  // namespace vllm::cpu_ops
