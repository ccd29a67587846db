// Parameters and host entry points of the selective-scan kernels (no torch, no device code: the binding
// .cpp and the .cu files both include it).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mambaseg {

constexpr int kMaxThreads = 256;  // threads per block, at most
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;

enum class ScanDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct ScanParams {
  int batch, channels, groups, state, length;  // state = N
  int items, threads, tile_len, n_tiles;        // n_tiles tiles of tile_len = threads * items steps per row
  int lanes_per_row;  // state-resident inference kernel: lanes sharing a row's states (1, 2 or 4)
  bool softplus;
  // Inputs: u, delta (B, C, L) and B, C (B, K, N, L) in the input dtype; A (C, N), D, bias (C,) fp32. All
  // contiguous, except that B and C may have any stride between their (batch, group) slabs of N * L contiguous
  // elements, the same for both: bc_group_stride (N * L when contiguous). The slices of the projection that
  // makes B and C side by side are that layout (the inference kernel reads them without a copy).
  const void* u;
  const void* delta;
  const float* A;
  const void* Bm;
  const void* Cm;
  int64_t bc_group_stride;
  const float* D;           // may be null
  const float* delta_bias;  // may be null
  // Forward: y (B, C, L), fp32, or (inference kernels, y_in_input_dtype) in the inputs' dtype; per tile
  // (row = batch * C + channel) its map from a zero state, (B*C, n_tiles, 2, N), and the state entering it,
  // (B*C, n_tiles, N), saved for the backward, fp32. The per-tile buffers are used only when n_tiles > 1.
  void* y;
  bool y_in_input_dtype;
  float* tile_maps;
  float* tile_carries;
  // Backward: dy (B, C, L); gradients, fp32, the reduced ones zero-initialised; the reverse scan's tile buffers.
  const float* dy;
  float* du;
  float* ddelta;
  float* dA;
  float* dB;
  float* dC;
  float* dD;      // may be null
  float* dbias;   // may be null
  float* reverse_maps;
  float* reverse_carries;
};

// Steps per thread: more for N = 1 (few registers per step, and more bytes in flight per thread).
inline int items_per_thread(int state) { return state == 1 ? 8 : 4; }

// Tiling for a row of `length` steps: threads per block and steps per tile.
inline void choose_tiling(ScanParams& p) {
  p.items = items_per_thread(p.state);
  int threads = 32;
  while (threads < kMaxThreads && threads * p.items < p.length) threads *= 2;
  p.threads = threads;
  p.tile_len = threads * p.items;
  p.n_tiles = (p.length + p.tile_len - 1) / p.tile_len;
}

void launch_scan_fwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream);
// Forward without the per-tile state the backward needs (inference): uses only the inputs and y.
void launch_scan_fwd_infer(const ScanParams& p, ScanDtype dtype, cudaStream_t stream);
void launch_scan_bwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream);

}  // namespace mambaseg
