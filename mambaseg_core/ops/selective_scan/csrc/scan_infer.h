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

}  // namespace mambaseg
