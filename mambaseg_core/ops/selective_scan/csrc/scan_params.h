// Parameters and host entry points of the selective-scan kernels (no torch, no device code: the binding
// .cpp and the .cu files both include it).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mambaseg {

constexpr int kItems = 4;        // consecutive steps per thread
constexpr int kMaxThreads = 256;  // threads per block, at most
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;

enum class ScanDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct ScanParams {
  int batch, channels, groups, state, length;  // state = N
  int threads, tile_len, n_tiles;               // n_tiles tiles of tile_len steps per row
  bool softplus;
  // Inputs, contiguous: u, delta (B, C, L) and B, C (B, K, N, L) in the input dtype; A (C, N), D, bias (C,) fp32.
  const void* u;
  const void* delta;
  const float* A;
  const void* Bm;
  const void* Cm;
  const float* D;           // may be null
  const float* delta_bias;  // may be null
  // Forward outputs: y (B, C, L) and the inclusive end state of every tile (B*C, n_tiles, N), fp32.
  float* y;
  float* tile_states;
  // Backward: dy (B, C, L); gradients, fp32, the reduced ones zero-initialised; reverse tile states.
  const float* dy;
  float* du;
  float* ddelta;
  float* dA;
  float* dB;
  float* dC;
  float* dD;      // may be null
  float* dbias;   // may be null
  float* reverse_states;
  int* sync;  // [0] ticket counter, [1 + tile] "state published" flag; zero-initialised
};

// Tiling for a row of `length` steps: threads per block and steps per tile.
inline void choose_tiling(ScanParams& p) {
  int threads = 32;
  while (threads < kMaxThreads && threads * kItems < p.length) threads *= 2;
  p.threads = threads;
  p.tile_len = threads * kItems;
  p.n_tiles = (p.length + p.tile_len - 1) / p.tile_len;
}

void launch_scan_fwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream);
void launch_scan_bwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream);

}  // namespace mambaseg
