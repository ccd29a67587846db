// Host emulator of the few CUDA features the selective-scan kernels use (the inference kernels of
// scan_fwd_infer.cu and scan_fwd_resident.cu, the training forward of scan_fwd.cu, the backward of scan_bwd.cu and the carry kernel of
// scan_common.cuh), so that the real kernel sources can be compiled with g++ and tested without a GPU
// (test/test_selective_scan_emulated.py).
//
// Every thread of a block is a ucontext fiber. The scheduler runs the fibers one at a time in an adversarial
// random order, and warp shuffles and __syncthreads are barriers: a warp may run as far ahead of the others as
// the kernel's own synchronisation allows, so a missing barrier or a shared buffer reused too early gives a
// wrong result instead of passing by luck. Blocks run one after another, each with the block size its launch
// asks for (1 to 1024 threads, as on the GPU).
//
// Source rewrite expected: every `kernel<<<grid, block[, smem[, stream]]>>>(args);` becomes
// `emu_launch([&] { kernel(args); }, grid, block[, smem[, stream]]);`.
// Compile with -fno-strict-aliasing: the kernels read T arrays through uint4 / float4 (16-byte loads), which
// nvcc allows and g++ -O2 miscompiles.
//
// Not emulated (each aborts or is out of scope): partial shuffle and __syncwarp masks, shuffle widths other than 32, dynamic
// shared memory, atomics other than float atomicAdd, intra-warp memory ordering without a shuffle or barrier,
// blocks running concurrently (so no race between blocks shows up). __shared__ variables are function
// statics: zero at first use and kept from block to block, not garbage.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

// Device qualifiers become plain host C++; the fibers of a block share function statics as they would share
// __shared__ memory.
#undef __shared__
#define __shared__ static
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace emu {

constexpr int kWarpSize = 32;
constexpr size_t kFiberStackBytes = 64 << 10;
// Adversarial order: this share of picks goes to the runnable lanes of one "hot" warp, redrawn after a
// log-uniform number of picks between these bounds, so that one warp races ahead of the others up to the next
// block barrier. Long stretches matter: a warp needs 32 picks per shuffle, and the training kernels at N = 16
// do ~200 shuffles between two block barriers; with short ones every warp would keep up with the others.
constexpr float kHotWarpShare = 0.97f;
constexpr double kHotWarpPicksMin = 64, kHotWarpPicksMax = 1 << 17;

[[noreturn]] inline void fail(const char* message) {
  std::fprintf(stderr, "cuda emulator: %s\n", message);
  std::abort();
}

// Threads arrive; the last of `expected` opens the barrier by advancing `generation`.
struct Barrier {
  int arrived = 0;
  int generation = 0;
};

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  const Barrier* waiting_on = nullptr;  // blocked until waiting_on->generation moves past waiting_generation
  int waiting_generation = 0;
  bool done = false;

  bool runnable() const { return !done && (waiting_on == nullptr || waiting_on->generation != waiting_generation); }
};

// The block being run.
struct Block {
  int threads = 0, index = 0, current = 0;  // current: the thread whose fiber is running
  std::vector<Fiber> fibers;
  std::vector<Barrier> warp_barriers;
  Barrier block_barrier;
  // Shuffle values, double-buffered by the parity of the warp barrier's generation, so that one barrier per
  // shuffle is enough: a lane can only write this buffer again two shuffles later, past a barrier that every
  // lane reaches after reading it.
  std::vector<float> shuffle_slots[2];
  ucontext_t scheduler;
  std::function<void()> kernel;
};

inline Block block;
inline std::mt19937 rng;
inline long long context_switches = 0;

inline int lanes_in_warp(int warp) { return std::min(kWarpSize, block.threads - warp * kWarpSize); }

// The calling thread arrives at `barrier` of `expected` threads and lets other fibers run until it opens.
inline void arrive_and_wait(Barrier& barrier, int expected) {
  if (++barrier.arrived == expected) {
    barrier.arrived = 0;
    ++barrier.generation;
    return;
  }
  Fiber& self = block.fibers[block.current];
  self.waiting_on = &barrier;
  self.waiting_generation = barrier.generation;
  ++context_switches;
  swapcontext(&self.context, &block.scheduler);  // resumed only once the barrier has opened
  self.waiting_on = nullptr;
}

inline void fiber_main() {
  block.kernel();
  block.fibers[block.current].done = true;
  swapcontext(&block.fibers[block.current].context, &block.scheduler);
}

// Runs every thread of block `index` to completion; aborts if all live threads wait on barriers that can
// never open (a barrier or shuffle not reached by every thread it counts).
inline void run_block(int threads, int index) {
  block.threads = threads, block.index = index;
  const int warps = (threads + kWarpSize - 1) / kWarpSize;
  block.fibers.resize(threads);
  block.warp_barriers.assign(warps, Barrier{});
  block.block_barrier = Barrier{};
  for (auto& slots : block.shuffle_slots) slots.assign(threads, 0.f);
  for (Fiber& fiber : block.fibers) {
    fiber.stack.resize(kFiberStackBytes);
    fiber.waiting_on = nullptr, fiber.done = false;
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = fiber.stack.data();
    fiber.context.uc_stack.ss_size = fiber.stack.size();
    fiber.context.uc_link = nullptr;
    makecontext(&fiber.context, fiber_main, 0);
  }
  std::uniform_real_distribution<float> coin(0.f, 1.f);
  std::vector<int> candidates;
  std::uniform_real_distribution<double> log2_hot_picks(std::log2(kHotWarpPicksMin), std::log2(kHotWarpPicksMax));
  int alive = threads, hot_warp = 0;
  for (long long pick = 0, next_draw = 0; alive > 0; ++pick) {
    if (pick == next_draw) {
      hot_warp = std::uniform_int_distribution<int>(0, warps - 1)(rng);
      next_draw = pick + static_cast<long long>(std::exp2(log2_hot_picks(rng)));
    }
    candidates.clear();
    if (coin(rng) < kHotWarpShare)
      for (int t = hot_warp * kWarpSize; t < hot_warp * kWarpSize + lanes_in_warp(hot_warp); ++t)
        if (block.fibers[t].runnable()) candidates.push_back(t);
    if (candidates.empty())
      for (int t = 0; t < threads; ++t)
        if (block.fibers[t].runnable()) candidates.push_back(t);
    if (candidates.empty()) fail("deadlock: every live thread waits on a barrier that can never open");
    block.current = candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
    Fiber& fiber = block.fibers[block.current];
    ++context_switches;
    swapcontext(&block.scheduler, &fiber.context);
    if (fiber.done) --alive;
  }
}

// A full-warp shuffle: every lane publishes `value`, waits for the whole warp, then reads `source_lane`'s.
inline float warp_exchange(unsigned mask, float value, int source_lane) {
  const int warp = block.current / kWarpSize;
  if (mask != 0xffffffffu || lanes_in_warp(warp) != kWarpSize) fail("only full-warp shuffles are emulated");
  Barrier& barrier = block.warp_barriers[warp];
  std::vector<float>& slots = block.shuffle_slots[barrier.generation & 1];
  slots[block.current] = value;
  arrive_and_wait(barrier, kWarpSize);
  return slots[warp * kWarpSize + source_lane];
}

}  // namespace emu

#define threadIdx (uint3{static_cast<unsigned>(emu::block.current), 0u, 0u})
#define blockDim (uint3{static_cast<unsigned>(emu::block.threads), 1u, 1u})
#define blockIdx (uint3{static_cast<unsigned>(emu::block.index), 0u, 0u})

inline void __syncthreads() { emu::arrive_and_wait(emu::block.block_barrier, emu::block.threads); }

// The warp's barrier, shared with the shuffles (their slot parity only needs every barrier counted).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  const int warp = emu::block.current / emu::kWarpSize;
  if (mask != 0xffffffffu || emu::lanes_in_warp(warp) != emu::kWarpSize) emu::fail("only full-warp __syncwarp is emulated");
  emu::arrive_and_wait(emu::block.warp_barriers[warp], emu::kWarpSize);
}

inline float __shfl_up_sync(unsigned mask, float value, unsigned delta) {
  const int lane = emu::block.current % emu::kWarpSize;
  // Lanes below delta keep their own value, but still take part in the exchange (it is a warp barrier).
  return emu::warp_exchange(mask, value, lane >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane);
}

inline float __shfl_down_sync(unsigned mask, float value, unsigned delta) {
  const int lane = emu::block.current % emu::kWarpSize, source = lane + static_cast<int>(delta);
  // Lanes whose source is past the warp keep their own value (and still take part in the exchange).
  return emu::warp_exchange(mask, value, source < emu::kWarpSize ? source : lane);
}

inline float __shfl_sync(unsigned mask, float value, int source_lane) {
  return emu::warp_exchange(mask, value, source_lane & (emu::kWarpSize - 1));
}

inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
  const int lane = emu::block.current % emu::kWarpSize;
  return emu::warp_exchange(mask, value, (lane ^ lane_mask) & (emu::kWarpSize - 1));
}

// A plain read-modify-write is atomic here: a fiber is never preempted inside it, only at a shuffle or
// barrier. Which order the contributions land in still follows the adversarial schedule.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

// Device-only intrinsics: the exact host functions (the GPU's are approximations within a few ulp).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }

// Runs a rewritten launch: the grid's blocks one after another, each block's threads as fibers.
template <typename Kernel>
void emu_launch(Kernel&& kernel, dim3 grid, dim3 threads, size_t dynamic_smem = 0, cudaStream_t = nullptr) {
  if (grid.y != 1 || grid.z != 1 || threads.y != 1 || threads.z != 1) emu::fail("only 1-D launches are emulated");
  if (dynamic_smem != 0) emu::fail("dynamic shared memory is not emulated");
  // What the GPU rejects as an invalid configuration (the launch would do nothing and set an error).
  if (grid.x < 1 || threads.x < 1 || threads.x > 1024) emu::fail("invalid launch: grid or block size out of range");
  emu::block.kernel = kernel;
  for (unsigned index = 0; index < grid.x; ++index)
    emu::run_block(static_cast<int>(threads.x), static_cast<int>(index));
}
