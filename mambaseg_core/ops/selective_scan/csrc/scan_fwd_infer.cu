// Inference forward of the selective scan: one pass, no state saved for a backward.
//
// Work split: one block of kWarps warps owns one whole (batch, channel) row and walks it in chunks of
// kWarps * 32 * kItems steps; every lane holds kItems consecutive steps. Per state a chunk is a warp scan of
// affine maps (lane-local composition, then shuffles) and, with several warps, one exchange of the warp totals
// through shared memory; the state leaving the chunk is carried in registers (every warp composes the same
// totals), so there is no extra launch and nothing is written but y.
// The kernel is latency-bound (per state: B and C loads, a serial composition, a 5-step shuffle scan, a
// barrier), so it takes kStates states per pass: their loads are in flight together, their compositions and
// shuffles are independent and overlap, and the pass needs one barrier, not kStates. The price is registers:
// kItems * kStates * 3 floats per lane live at once. y still sums the states in order 0..N-1, so kStates
// changes no result.
// Short rows take one warp, with no barrier at all; long rows take several warps (the 768 rows of a DSEC
// stage-0 CSIM scan would leave most of the GPU idle and latency-bound with one warp each), see
// default_infer_config. The other compiled configurations are there for tuning (see SweepConfigsN16).
// Compared with the training forward (scan_fwd.cu) this does a third of the exp2 calls (no map-only pass, no
// recomputation), reads B and C once, and amortises each scan over more steps per lane.
#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "scan_common.cuh"
#include "scan_infer.h"

namespace mambaseg {

template <typename T, int kMaxN, int kItems, int kWarps, int kStates>
__global__ void __launch_bounds__(kWarps * 32) scan_fwd_infer_kernel(ScanParams p) {
  static_assert(kMaxN % kStates == 0, "kStates must divide kMaxN, so that a pass never runs past the arrays");
  // Warp totals per state, double-buffered by chunk parity: a warp may start the next chunk's writes while a
  // slower one still reads this chunk's (kWarps > 1 only). Slot (parity, n) is next written two chunks later,
  // past the next chunk's first barrier, which no warp passes before every warp has read it.
  __shared__ float2 warp_totals[2][kMaxN][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row = blockIdx.x;
  const int batch = row / p.channels, channel = row % p.channels;
  const int group = channel / (p.channels / p.groups);
  const int L = p.length, N = p.state;
  const int64_t row_offset = static_cast<int64_t>(row) * L;
  const T* u_row = static_cast<const T*>(p.u) + row_offset;
  const T* delta_row = static_cast<const T*>(p.delta) + row_offset;
  const int64_t group_offset = static_cast<int64_t>(batch * p.groups + group) * p.bc_group_stride;
  const T* Bg = static_cast<const T*>(p.Bm) + group_offset;
  const T* Cg = static_cast<const T*>(p.Cm) + group_offset;

  const float bias = p.delta_bias ? p.delta_bias[channel] : 0.f;
  const float skip = p.D ? p.D[channel] : 0.f;
  float A2[kMaxN], carry[kMaxN];  // A * log2(e), and the state entering the current chunk
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) A2[n] = n < N ? p.A[channel * N + n] * kLog2e : 0.f, carry[n] = 0.f;

  constexpr int kWarpSteps = 32 * kItems, kChunk = kWarps * kWarpSteps;
  int parity = 0;
  for (int chunk = 0; chunk < L; chunk += kChunk, parity ^= 1) {
    const int t0 = chunk + warp * kWarpSteps + lane * kItems;
    const T* const u_delta_rows[2] = {u_row, delta_row};
    float u_delta[2][kItems], dt[kItems], du[kItems], y[kItems], dt_sum = 0.f;
    load_rows<kItems>(u_delta_rows, t0, L, u_delta);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      // Padded steps get dt = 0: decay 1 and input 0, the identity map.
      dt[i] = t0 + i < L ? delta_to_dt_inference<T>(u_delta[1][i] + bias, p.softplus) : 0.f;
      y[i] = skip * u_delta[0][i];
      du[i] = u_delta[0][i] * dt[i];
      dt_sum += dt[i];
    }
#pragma unroll
    for (int first = 0; first < kMaxN; first += kStates) {
      if (first >= N) break;
      // States first .. first + kStates - 1: rows [0, kStates) of bc are B (x once scaled by du), rows
      // [kStates, 2 kStates) are C, all loaded together. States past N (a last pass that N does not fill)
      // re-read state `first`, in bounds: they are scanned like the others, and only kept out of y, by a
      // branch uniform over the block rather than by zeroing their B and C step by step.
      const T* bc_rows[2 * kStates];
#pragma unroll
      for (int k = 0; k < kStates; ++k) {
        const int64_t offset = static_cast<int64_t>(first + k < N ? first + k : first) * L;
        bc_rows[k] = Bg + offset, bc_rows[kStates + k] = Cg + offset;
      }
      float a[kStates][kItems], bc[2 * kStates][kItems];
      load_rows<kItems>(bc_rows, t0, L, bc);
      // This lane's steps composed, from a zero state: the decay is one exp2 of the summed dt (the product of
      // the steps' decays, kItems - 1 multiplications fewer per state).
      float decay[kStates], h[kStates];
#pragma unroll
      for (int k = 0; k < kStates; ++k) decay[k] = exp2f(dt_sum * A2[first + k]), h[k] = 0.f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
#pragma unroll
        for (int k = 0; k < kStates; ++k) {
          a[k][i] = exp2f(dt[i] * A2[first + k]);
          bc[k][i] *= du[i];  // x
          h[k] = fmaf(a[k][i], h[k], bc[k][i]);
        }
      }
      // Inclusive warp scans of the lane maps: afterwards (decay, h) maps the warp's start to this lane's end.
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
#pragma unroll
        for (int k = 0; k < kStates; ++k) {
          const float earlier_decay = __shfl_up_sync(0xffffffffu, decay[k], offset);
          const float earlier_h = __shfl_up_sync(0xffffffffu, h[k], offset);
          if (lane >= offset) h[k] = fmaf(decay[k], earlier_h, h[k]), decay[k] *= earlier_decay;
        }
      }
      float entering[kStates];  // the state entering this warp's steps
#pragma unroll
      for (int k = 0; k < kStates; ++k) entering[k] = carry[first + k];
      if constexpr (kWarps > 1) {
        if (lane == 31) {
#pragma unroll
          for (int k = 0; k < kStates; ++k) warp_totals[parity][first + k][warp] = make_float2(decay[k], h[k]);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kStates; ++k) {
          float state = carry[first + k];
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            if (w == warp) entering[k] = state;
            const float2 total = warp_totals[parity][first + k][w];
            state = fmaf(total.x, state, total.y);
          }
          carry[first + k] = state;
        }
      }
#pragma unroll
      for (int k = 0; k < kStates; ++k) {
        const float leaving = fmaf(decay[k], entering[k], h[k]);  // state after this lane's last step
        float state = __shfl_up_sync(0xffffffffu, leaving, 1);
        if (lane == 0) state = entering[k];
        if constexpr (kWarps == 1) carry[first + k] = __shfl_sync(0xffffffffu, leaving, 31);
        if (first + k < N) {
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            state = fmaf(a[k][i], state, bc[k][i]);
            y[i] = fmaf(bc[kStates + k][i], state, y[i]);
          }
        }
      }
    }
    store_y<kItems, T>(p, row_offset, t0, L, y);
  }
}

// A configuration fixed at compile time, and a list of them.
template <int kItems, int kWarps, int kStates>
struct Config {
  static constexpr InferConfig value{kItems, kWarps, kStates};

  template <typename T, int kMaxN>
  static void launch(const ScanParams& p, cudaStream_t stream) {
    scan_fwd_infer_kernel<T, kMaxN, kItems, kWarps, kStates><<<p.batch * p.channels, kWarps * 32, 0, stream>>>(p);
  }
};
template <class... Configs>
struct ConfigList {};

// Compiled for every dtype and N. Short rows take one warp and fewer steps per lane, so that every lane has
// work; rows longer than two one-warp chunks take a block of 4 warps where no tuned configuration is compiled.
using DefaultConfigs = ConfigList<Config<4, 1, 1>, Config<8, 1, 1>, Config<16, 1, 1>, Config<16, 4, 1>>;

// Where a tuned configuration is compiled for the dtype and N, the H100 sweep (benchmarks/scan.py --infer-sweep,
// docs/benchmarks.md) picks it over the defaults; the same for every dtype. The deciding quantities are
// parallelism and the share of a chunk's warp scan: 1536 rows or more fill the GPU with a warp per row, of 2
// states per pass and as many steps per lane as fit the row in few chunks (4 steps up to 128-step rows, 6 for a
// 192-step row in one chunk, 4 again up to 320 steps, then 12). Fewer rows of over 512 steps take 4 warps of 4
// steps and 2 states, or with under 384 rows 8 warps of 8 steps. At N = 1, rows over 1024 steps take 8 warps of
// 8 steps. On the sweep's N = 16 shapes (fp32 and bf16) this is within 15 % of the fastest configuration per shape,
// except at the two 768-step CTIM shapes, within 30 % (docs/benchmarks.md).
InferConfig default_infer_config(int rows, int length, ScanDtype dtype, int state) {
  InferConfig untuned{16, 4, 1};
  if (length <= 32 * 4)
    untuned = {4, 1, 1};
  else if (length <= 32 * 8)
    untuned = {8, 1, 1};
  else if (length <= 2 * 32 * 16)
    untuned = {16, 1, 1};
  InferConfig tuned = untuned;
  if (state == 1) {
    if (length > 2 * 32 * 16) tuned = {8, 8, 1};
  } else if (rows >= 1536) {
    if (length <= 32 * 4)
      tuned = {4, 1, 2};
    else if (length <= 32 * 6)
      tuned = {6, 1, 2};
    else if (length <= 320)
      tuned = {4, 1, 2};
    else
      tuned = {12, 1, 2};
  } else if (length > 512) {
    tuned = rows < 384 ? InferConfig{8, 8, 1} : InferConfig{4, 4, 2};
  }
  const std::vector<InferConfig> compiled = compiled_infer_configs(dtype, state);
  return std::find(compiled.begin(), compiled.end(), tuned) != compiled.end() ? tuned : untuned;
}

// Beyond the defaults, the configurations default_infer_config picks, compiled for every dtype at N = 9..16 and
// N = 1; and tuning variants for the model's rows (CSIM/CTIM at N = 16: long rows, and one-warp variants with
// several states per pass or a lane's steps fitted to a short row; the encoder at N = 1), fp32 and bf16 only, to
// time against them (benchmarks/scan.py --infer-sweep). The variants are pruned by registers (items * states
// <= 32; ptxas -v) and kept few, since each one lengthens the build. No list repeats another's configuration.
using RuleConfigsN16 = ConfigList<Config<4, 1, 2>, Config<6, 1, 2>, Config<12, 1, 2>, Config<4, 4, 2>, Config<8, 8, 1>>;
using RuleConfigsN1 = ConfigList<Config<8, 8, 1>>;
using SweepConfigsN16 = ConfigList<Config<16, 4, 2>, Config<8, 4, 1>, Config<8, 4, 2>, Config<8, 4, 4>,
                                   Config<8, 8, 2>, Config<4, 4, 4>, Config<4, 8, 2>, Config<4, 1, 4>,
                                   Config<8, 1, 2>, Config<16, 1, 2>, Config<6, 1, 1>, Config<12, 1, 1>>;
using SweepConfigsN1 = ConfigList<Config<8, 4, 1>, Config<16, 8, 1>>;

// The configurations compiled beyond the defaults for inputs of T with N up to kMaxN.
template <typename T, int kMaxN>
struct ExtraConfigs {
  static constexpr bool kSweep = std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>;
  using Rule = std::conditional_t<kMaxN == 16, RuleConfigsN16,
                                  std::conditional_t<kMaxN == 1, RuleConfigsN1, ConfigList<>>>;
  using Sweep = std::conditional_t<kSweep && kMaxN == 16, SweepConfigsN16,
                                   std::conditional_t<kSweep && kMaxN == 1, SweepConfigsN1, ConfigList<>>>;
};

// Launches the configuration of the list equal to `config`; false if there is none.
template <typename T, int kMaxN, class... Configs>
bool launch_listed(ConfigList<Configs...>, const ScanParams& p, InferConfig config, cudaStream_t stream) {
  return ((Configs::value == config && (Configs::template launch<T, kMaxN>(p, stream), true)) || ...);
}

template <class... Configs>
void append_listed(ConfigList<Configs...>, std::vector<InferConfig>& out) {
  (out.push_back(Configs::value), ...);
}

template <typename T, int kMaxN>
struct LaunchConfig {
  static void run(const ScanParams& p, cudaStream_t stream, const InferConfig& config, bool& launched) {
    launched = launch_listed<T, kMaxN>(DefaultConfigs{}, p, config, stream) ||
               launch_listed<T, kMaxN>(typename ExtraConfigs<T, kMaxN>::Rule{}, p, config, stream) ||
               launch_listed<T, kMaxN>(typename ExtraConfigs<T, kMaxN>::Sweep{}, p, config, stream);
  }
};

template <typename T, int kMaxN>
struct ListConfigs {
  static void run(const ScanParams&, cudaStream_t, std::vector<InferConfig>& out) {
    append_listed(DefaultConfigs{}, out);
    append_listed(typename ExtraConfigs<T, kMaxN>::Rule{}, out);
    append_listed(typename ExtraConfigs<T, kMaxN>::Sweep{}, out);
  }
};

std::vector<InferConfig> compiled_infer_configs(ScanDtype dtype, int state) {
  ScanParams p{};
  p.state = state;
  std::vector<InferConfig> configs;
  dispatch_dtype_state<ListConfigs>(p, dtype, nullptr, configs);
  return configs;
}

bool launch_scan_fwd_infer_config(const ScanParams& p, ScanDtype dtype, InferConfig config, cudaStream_t stream) {
  bool launched = false;
  dispatch_dtype_state<LaunchConfig>(p, dtype, stream, config, launched);
  return launched;
}

void launch_scan_fwd_infer(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  const InferConfig config = default_infer_config(p.batch * p.channels, p.length, dtype, p.state);
  if (!launch_scan_fwd_infer_config(p, dtype, config, stream))
    throw std::logic_error("selective_scan cuda: the default inference configuration is not compiled (a bug)");
}

}  // namespace mambaseg
