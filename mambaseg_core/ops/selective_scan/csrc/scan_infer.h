// Launch configurations of the inference scan (scan_fwd_infer.cu), for its default launcher and for tuning
// (no torch, no device code: the binding .cpp includes it too).
#pragma once

#include <vector>

#include "scan_params.h"

namespace mambaseg {

// One compiled shape of the inference kernel: steps per lane, warps per row, and states scanned together per
// pass (their loads, shuffles and block barrier overlap).
struct InferConfig {
  int items, warps, states;
};

constexpr bool operator==(const InferConfig& a, const InferConfig& b) {
  return a.items == b.items && a.warps == b.warps && a.states == b.states;
}

// The configuration launch_scan_fwd_infer picks for `rows` rows (batch * channels) of `length` steps, inputs of
// `dtype`, N = `state`.
InferConfig default_infer_config(int rows, int length, ScanDtype dtype, int state);

// Every configuration compiled for inputs of `dtype` with N = `state` (the defaults, plus at N in 9..16 and N = 1
// the rule's picks and, for fp32 and bf16, tuning variants).
std::vector<InferConfig> compiled_infer_configs(ScanDtype dtype, int state);

// Launches one explicit configuration; returns false (launching nothing) if it is not compiled for p's N and
// `dtype`.
bool launch_scan_fwd_infer_config(const ScanParams& p, ScanDtype dtype, InferConfig config, cudaStream_t stream);

// The state-resident inference kernel (scan_fwd_resident.cu): a lane per row holding all its states (or 2 or 4 lanes
// sharing them), rows cut into segments of whole kResidentTile-step tiles.
constexpr int kResidentTile = 32;
constexpr int kResidentMinState = 9;
constexpr int kResidentLanesPerRow = 2;           // lanes sharing a row's states by default (1, 2 or 4)
constexpr int kResidentOneSegmentWarps = 2048;    // rows that give this many warps run as one segment each
constexpr int kResidentTargetWarps = 6144;        // else segments enough to bring a launch to about this many warps
constexpr int kResidentRuleSegment = 128;        // few rows: the default launch takes it where segments of this
constexpr int kResidentRuleWarps = 3072;         // many steps give the rows' warps at least this many warps

// Whether the default inference launch takes the state-resident kernel for `rows` (batch * channels) rows of
// `length` steps with N = `state`: at N >= kResidentMinState where its default plan beat the warp-scan kernel's
// default in the H100 sweep (docs/benchmarks.md, fp16): rows that fill the GPU as one segment each (DSEC's stage-0
// TSSM, 35,200 rows of 192 steps: 69 vs 116 µs), and rows whose warps times their count of kResidentRuleSegment-step
// segments reach kResidentRuleWarps (DSEC's stage-0 CSIM, 768 x 17,600: 218 vs 334 µs; stage-1 CSIM, 1,536 x 4,400:
// 120 vs 135 µs). Below that its second exp2 per step (segments) and its per-segment launches cost more than the
// warp scan's shuffles (DDD17's stage-0 CSIM, 768 x 4,350: 90 vs 89 µs; DSEC's stage-2 CSIM, 3,072 x 1,120: 69 vs 67;
// DSEC's stage-1 TSSM, 8,800 x 384: 71 vs 52).
bool uses_resident(int rows, int length, int state);

// Warps per (batch, group): 32 / p.lanes_per_row of its channels each.
int resident_row_blocks(const ScanParams& p);

// Sets p.lanes_per_row (`lanes_per_row`, 1, 2 or 4, or the default if <= 0), p.tile_len and p.n_tiles: segments of
// `segment_len` steps rounded up to whole tiles, or (segment_len <= 0) the default count.
void plan_resident(ScanParams& p, int segment_len, int lanes_per_row);

// Launches the kernel on a planned p; with p.n_tiles > 1 it needs p.tile_maps (rows, n_tiles, 2, N) and
// p.tile_carries (rows, n_tiles, N), fp32 scratch.
void launch_scan_fwd_resident(const ScanParams& p, ScanDtype dtype, cudaStream_t stream);

}  // namespace mambaseg
