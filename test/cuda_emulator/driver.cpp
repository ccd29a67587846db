// Runs the emulated inference scan kernels (every compiled configuration of the warp-scan kernel, and at N >= 9 the
// state-resident kernel) on the cases given in argv and checks them against a float64 reference. One line per
// (case, configuration), "ok" or "FAIL"; exit status 1 on any failure, 2 on a bad argument.
//
// Usage: driver CASE...   with CASE = dtype,N,L,groups,softplus[,skip_and_bias[,channels]]   e.g. fp32,16,37,2,1
// (dtype: fp32, bf16, fp16; see harness.h)
//        driver --default-config ROWS,N,L...   prints the default launch configuration of each shape per dtype:
//        "ROWS,N,L fp32=I,W,S bf16=I,W,S fp16=I,W,S" (default_infer_config, compiled here for the host)
//        driver --resident-plan CHANNELS,GROUPS,L...   prints, for batch 1 and N = 16, whether the default launch takes
//        the state-resident kernel and its default plan: "C,G,L uses_resident=0|1 plan=STEPS,SEGMENTS,LANES"
//        driver --softplus-readout DTYPE,N...   reads dt = softplus(delta) out of both inference kernels and checks it
//        against float64 to --softplus-tolerance (see softplus_readout)
//
// B and C are read from evenly spaced slabs with NaN gaps between them (ScanParams::bc_group_stride).
// Checks per configuration: max |y - reference| / max |reference| <= kTolerance (every y written and finite,
// nothing written out of bounds),
// bit-identical y across configurations that differ only in states per pass (the kernel sums the states
// in the same order whatever kStates), and for fp16/bf16 inputs y stored in their dtype (y_in_input_dtype) equal,
// bit for bit, to the fp32 y rounded to nearest (every element written, nothing out of bounds).
// Needs the kernel sources with launches rewritten for emu.h (see test/test_selective_scan_emulated.py).
#include "emu.h"
#include "harness.h"
#include "scan_fwd_infer.cu"
#include "scan_fwd_resident.cu"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <utility>

namespace {

using mambaseg::InferConfig;
using mambaseg::ScanDtype;
using mambaseg::ScanParams;
using harness::Case;
using harness::kBatch;

constexpr double kTolerance = 2e-5;  // relative to max |reference|; as the fp32 forward tolerance of the GPU tests

// For T = fp16/bf16: launches again with y in T (ScanParams::y_in_input_dtype) and returns " narrow y exact" if every
// element is y32's rounded to nearest (and nothing was written out of bounds), else " narrow y DIFFERENT" and counts
// a failure; "" for fp32 inputs.
template <typename T, typename Launch>
std::string check_narrow_y(ScanParams p, const harness::GuardedBuffer<float>& y32, Launch launch, int& failures) {
  if constexpr (std::is_same_v<T, float>) {
    return "";
  } else {
    harness::GuardedBuffer<T> y(y32.size());
    p.y = y.data(), p.y_in_input_dtype = true;
    bool same = launch(p) && y.intact();
    for (size_t i = 0; same && i < y.size(); ++i) {
      const T expected = harness::from_host_float<T>(y32[i]);
      same = std::memcmp(&y[i], &expected, sizeof(T)) == 0;
    }
    failures += !same;
    return same ? " narrow y exact" : " narrow y DIFFERENT";
  }
}

// Runs the state-resident kernel on a case (p: its inputs) with its default plan, and with 1, 2 and 4 lanes a row and
// segments of one to three tiles (rows of several segments: the compose launch, the carry kernel, the apply
// launch); returns the number of failed checks.
template <typename T>
int run_resident(ScanParams p, ScanDtype dtype, const Case& c, const std::vector<double>& expected) {
  int failures = 0;
  const std::pair<int, int> plans[] = {
      {0, 0}, {mambaseg::kResidentTile, 1}, {3 * mambaseg::kResidentTile, 2}, {2 * mambaseg::kResidentTile, 4}};
  for (const auto& [segment_len, lanes_per_row] : plans) {
    mambaseg::plan_resident(p, segment_len, lanes_per_row);
    const size_t rows = static_cast<size_t>(p.batch) * p.channels;
    harness::GuardedBuffer<float> y(expected.size()), maps(rows * p.n_tiles * 2 * p.state),
        carries(rows * p.n_tiles * p.state);
    p.y = y.data(), p.tile_maps = maps.data(), p.tile_carries = carries.data();
    const auto start = std::chrono::steady_clock::now();
    mambaseg::launch_scan_fwd_resident(p, dtype, nullptr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bool intact = y.intact() && maps.intact() && carries.intact();
    const double error = intact ? harness::relative_error(y, expected) : INFINITY;
    bool ok = error <= kTolerance;
    int narrow_failures = 0;
    const std::string narrow = check_narrow_y<T>(
        p, y, [&](const ScanParams& q) { return mambaseg::launch_scan_fwd_resident(q, dtype, nullptr), true; },
        narrow_failures);
    ok = ok && narrow_failures == 0;
    failures += !ok;
    std::printf("%s %s resident segment_len=%d segments=%d lanes_per_row=%d rel_err=%.2e%s (%.2fs)\n",
                ok ? "ok" : "FAIL", harness::describe(c).c_str(), p.tile_len, p.n_tiles, p.lanes_per_row, error,
                narrow.c_str(), seconds);
    std::fflush(stdout);
  }
  return failures;
}

// Runs every compiled configuration on one case; returns the number of failed checks.
template <typename T>
int run_case(const Case& c, ScanDtype dtype) {
  const unsigned seed = harness::case_seed(c);
  emu::rng.seed(seed);
  const harness::Inputs<T> in(c, seed);
  const std::vector<double> expected = harness::reference_forward(harness::to_problem(c, in));
  for (double r : expected)
    if (!std::isfinite(r)) emu::fail("the float64 reference is not finite: the driver's inputs are bad");

  ScanParams p{};
  p.batch = kBatch, p.channels = c.channels, p.groups = c.groups, p.state = c.state, p.length = c.length;
  p.softplus = c.softplus;
  p.u = in.u.data(), p.delta = in.delta.data(), p.A = in.A.data();
  // B and C as the SSM hands them over: slices of one projection, (B slab, gap, C slab, gap) per (batch, group),
  // read in place through bc_group_stride. The gaps are NaN: a read outside the slabs poisons y.
  const size_t slab = static_cast<size_t>(c.state) * c.length, stride = 2 * slab + 8, slabs = in.Bm.size() / slab;
  harness::GuardedBuffer<T> packed(slabs * stride);
  for (size_t g = 0; g < slabs; ++g) {
    std::copy_n(in.Bm.data() + g * slab, slab, packed.data() + g * stride);
    std::copy_n(in.Cm.data() + g * slab, slab, packed.data() + g * stride + slab + 4);
  }
  p.Bm = packed.data(), p.Cm = packed.data() + slab + 4, p.bc_group_stride = static_cast<int64_t>(stride);
  if (c.skip_and_bias) p.D = in.D.data(), p.delta_bias = in.bias.data();

  // Cases with more channels than harness::kChannels are there for the state-resident kernel (lanes are channels);
  // the warp-scan configurations (a block per channel, every thread a fiber here) would only make them slow.
  std::vector<InferConfig> configs;
  if (c.channels == harness::kChannels) configs = mambaseg::compiled_infer_configs(dtype, c.state);
  // Fewest states first: the first configuration of each (items, warps) is the one the others must match.
  std::stable_sort(configs.begin(), configs.end(), [](const InferConfig& a, const InferConfig& b) {
    return a.states < b.states;
  });
  std::map<std::pair<int, int>, std::pair<InferConfig, harness::GuardedBuffer<float>>> first_of_shape;
  int failures = 0;
  for (const InferConfig& config : configs) {
    harness::GuardedBuffer<float> y(expected.size());
    p.y = y.data();
    const auto start = std::chrono::steady_clock::now();
    const bool launched = mambaseg::launch_scan_fwd_infer_config(p, dtype, config, nullptr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double error = launched && y.intact() ? harness::relative_error(y, expected) : INFINITY;
    bool ok = launched && error <= kTolerance;
    char bitwise[64] = "";
    const auto shape = std::make_pair(config.items, config.warps);
    const auto first = first_of_shape.find(shape);
    if (first == first_of_shape.end()) {
      first_of_shape.emplace(shape, std::make_pair(config, y));
    } else {
      const InferConfig& other = first->second.first;
      const bool same = std::memcmp(y.data(), first->second.second.data(), y.size() * sizeof(float)) == 0;
      ok = ok && same;
      std::snprintf(bitwise, sizeof bitwise, " bitwise %s (%d,%d,%d)", same ? "equal to" : "DIFFERENT from",
                    other.items, other.warps, other.states);
    }
    int narrow_failures = 0;
    const std::string narrow = check_narrow_y<T>(
        p, y, [&](const ScanParams& q) { return mambaseg::launch_scan_fwd_infer_config(q, dtype, config, nullptr); },
        narrow_failures);
    ok = ok && narrow_failures == 0;
    failures += !ok;
    std::printf("%s %s config=(%d,%d,%d) %s rel_err=%.2e%s%s (%.2fs)\n", ok ? "ok" : "FAIL",
                harness::describe(c).c_str(), config.items, config.warps, config.states,
                launched ? "launched" : "NOT-LAUNCHED", error, bitwise, narrow.c_str(), seconds);
    std::fflush(stdout);
  }
  if (c.state >= mambaseg::kResidentMinState) failures += run_resident<T>(p, dtype, c, expected);
  return failures;
}

}  // namespace

int print_default_configs(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    int rows = 0, state = 0, length = 0;
    if (std::sscanf(argv[i], "%d,%d,%d", &rows, &state, &length) != 3) {
      std::fprintf(stderr, "bad shape '%s': expected ROWS,N,L\n", argv[i]);
      return 2;
    }
    std::printf("%d,%d,%d", rows, state, length);
    const std::pair<const char*, ScanDtype> dtypes[] = {
        {"fp32", ScanDtype::kFloat32}, {"bf16", ScanDtype::kBFloat16}, {"fp16", ScanDtype::kFloat16}};
    for (const auto& [name, dtype] : dtypes) {
      const InferConfig c = mambaseg::default_infer_config(rows, length, dtype, state);
      std::printf(" %s=%d,%d,%d", name, c.items, c.warps, c.states);
    }
    std::printf("\n");
  }
  return 0;
}

int print_resident_plans(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    ScanParams p{};
    p.batch = 1, p.state = 16;
    if (std::sscanf(argv[i], "%d,%d,%d", &p.channels, &p.groups, &p.length) != 3 || p.groups < 1 ||
        p.channels % p.groups != 0) {
      std::fprintf(stderr, "bad shape '%s': expected CHANNELS,GROUPS,L with groups dividing channels\n", argv[i]);
      return 2;
    }
    mambaseg::plan_resident(p, 0, 0);
    std::printf("%s uses_resident=%d plan=%d,%d,%d\n", argv[i], mambaseg::uses_resident(p.channels, p.length, 16),
                p.tile_len, p.n_tiles, p.lanes_per_row);
  }
  return 0;
}

// dt = softplus(delta) read out of the warp-scan kernel (its default configuration) and, at N >= 9, the
// state-resident kernel (its default plan and 4 lanes a row): with A -> -inf every step forgets the state, and with
// u = 1, B = 1 and C = 1/N (exact in every dtype) y = dt. Deltas from -14 to 26 over 1280 steps cover every branch
// of the half-precision softplus (series, log, x > 20). Returns the number of failed checks.
template <typename T>
int softplus_readout(const std::string& label, ScanDtype dtype, int state, double tolerance) {
  constexpr int kLength = 1280;
  ScanParams p{};
  p.batch = 1, p.channels = 2, p.groups = 1, p.state = state, p.length = kLength, p.softplus = true;
  harness::GuardedBuffer<T> u(p.channels * kLength, 1.f), delta(p.channels * kLength),
      B(static_cast<size_t>(state) * kLength, 1.f), C(static_cast<size_t>(state) * kLength, 1.f / state);
  harness::GuardedBuffer<float> A(static_cast<size_t>(p.channels) * state, -1e30f);
  for (size_t i = 0; i < delta.size(); ++i)
    delta[i] = harness::from_host_float<T>(-14.f + 40.f * static_cast<float>(i % kLength) / (kLength - 1));
  p.u = u.data(), p.delta = delta.data(), p.A = A.data(), p.Bm = B.data(), p.Cm = C.data();
  p.bc_group_stride = static_cast<int64_t>(state) * kLength;
  auto check = [&](const char* kernel, const harness::GuardedBuffer<float>& y) {
    double worst = y.intact() ? 0.0 : INFINITY;
    for (size_t i = 0; i < y.size(); ++i) {
      const double x = harness::to_host_float(delta[i]);
      const double expected = x > 20.0 ? x : std::log1p(std::exp(x));
      worst = std::max(worst, std::isfinite(y[i]) ? std::fabs(y[i] - expected) / expected : INFINITY);
    }
    const bool ok = worst <= tolerance;
    std::printf("%s softplus %s,%d %s max_rel_err=%.2e\n", ok ? "ok" : "FAIL", label.c_str(), state, kernel, worst);
    return ok ? 0 : 1;
  };
  int failures = 0;
  harness::GuardedBuffer<float> y(p.channels * kLength);
  p.y = y.data();
  const InferConfig config = mambaseg::default_infer_config(p.channels, kLength, dtype, state);
  failures += mambaseg::launch_scan_fwd_infer_config(p, dtype, config, nullptr) ? check("warp-scan", y) : 1;
  if (state >= mambaseg::kResidentMinState) {
    for (const int lanes_per_row : {0, 4}) {
      mambaseg::plan_resident(p, 0, lanes_per_row);
      harness::GuardedBuffer<float> y_resident(p.channels * kLength), maps(p.channels * p.n_tiles * 2 * state),
          carries(p.channels * p.n_tiles * state);
      p.y = y_resident.data(), p.tile_maps = maps.data(), p.tile_carries = carries.data();
      mambaseg::launch_scan_fwd_resident(p, dtype, nullptr);
      failures += check(lanes_per_row ? "resident-4-lanes" : "resident", y_resident);
    }
  }
  return failures;
}

int run_softplus_readouts(int argc, char** argv) {
  double tolerance = 0.0;
  int failures = 0;
  for (int i = 2; i < argc; ++i) {
    if (std::sscanf(argv[i], "--softplus-tolerance=%lf", &tolerance) == 1) continue;
    Case c{};
    char dtype[8];
    int end = 0;
    if (std::sscanf(argv[i], "%7[a-z0-9],%d%n", dtype, &c.state, &end) != 2 || argv[i][end] != '\0' ||
        c.state < 1 || c.state > 16 || tolerance <= 0.0) {
      std::fprintf(stderr, "bad read-out '%s': expected --softplus-tolerance=X first, then DTYPE,N\n", argv[i]);
      return 2;
    }
    c.dtype = dtype;
    failures += harness::run_in_dtype(c, [&](auto element, ScanDtype scan_dtype) {
      return softplus_readout<decltype(element)>(c.dtype, scan_dtype, c.state, tolerance);
    });
  }
  return failures == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--softplus-readout") == 0) return run_softplus_readouts(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "--default-config") == 0) return print_default_configs(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "--resident-plan") == 0) return print_resident_plans(argc, argv);
  std::vector<Case> cases;
  if (!harness::parse_cases(argc, argv, cases)) return 2;
  int failures = 0;
  for (const Case& c : cases)
    failures += harness::run_in_dtype(c, [&](auto element, ScanDtype dtype) {
      return run_case<decltype(element)>(c, dtype);
    });
  std::printf("%d failed checks, %lld context switches\n", failures, emu::context_switches);
  return failures == 0 ? 0 : 1;
}
