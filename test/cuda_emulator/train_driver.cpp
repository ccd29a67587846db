// Runs the emulated training kernels (scan_fwd.cu forward, scan_bwd.cu backward, and between their launches
// the carry kernel of scan_common.cuh) on the cases given in argv and checks y and every gradient of
// loss = sum(y * dy), for a fixed random dy, against the float64 reference of harness.h. Before the cases it
// checks the reference gradients themselves against central finite differences on a tiny problem.
// One line per check, "ok" or "FAIL"; exit status 1 on any failure, 2 on a bad argument.
//
// Usage: train_driver CASE...   with CASE = dtype,N,L,groups,softplus[,skip_and_bias]   e.g. fp32,16,2085,1,0
// (see harness.h)
//
// Every buffer is sized and initialised as scan_binding.cpp's forward() and backward() size it (empty ones
// NaN, the reduced gradients zero), inside NaN guards: an unwritten value, a read past a buffer or a write
// past it fails the case. Without D and delta_bias the kernels get null pointers and dD, ddelta_bias are
// not checked (the binding returns them empty).
// Needs the kernel sources with launches rewritten for emu.h (see test/test_selective_scan_emulated.py).
#include "emu.h"
#include "harness.h"
#include "scan_bwd.cu"
#include "scan_fwd.cu"

#include <chrono>
#include <string>
#include <vector>

namespace {

using mambaseg::ScanDtype;
using mambaseg::ScanParams;
using harness::Case;
using harness::GuardedBuffer;
using harness::kBatch;

// Relative to max |reference|. The kernels compute in fp32 from the same rounded inputs the reference sees
// (bf16 and fp16 included) and return fp32, and the emulator's exp2f is the exact host one: the errors are
// about 1e-7 here. 1e-5 for the gradients (the GPU tests allow 2e-4) still fails a gradient that misses one
// step of a 4000-step sum.
constexpr double kForwardTolerance = 2e-5, kGradientTolerance = 1e-5;
// Finite differences in float64: step and bound (relative to max |gradient|) for the reference check.
constexpr double kStep = 1e-6, kFiniteDifferenceTolerance = 1e-6;

// sum(y * dy)
double loss(const harness::Problem& p, const std::vector<double>& dy) {
  const std::vector<double> y = harness::reference_forward(p);
  double sum = 0;
  for (size_t i = 0; i < y.size(); ++i) sum += y[i] * dy[i];
  return sum;
}

// The float64 reference gradients of every input against central differences of the loss, on a tiny problem
// (N = 3, L = 6) per (groups, softplus); returns the number of failed checks.
int check_reference_gradients() {
  int failures = 0;
  for (const Case& c : {Case{"fp32", 3, 6, 1, true}, Case{"fp32", 3, 6, 2, false}}) {
    harness::Problem p = harness::to_problem(c, harness::Inputs<float>(c, harness::case_seed(c)));
    const std::vector<double> dy = harness::to_double(harness::standard_normal(p.x.u.size(), 7));
    harness::Tensors analytic = harness::reference_backward(p, dy);
    const auto inputs = p.x.named();
    const auto gradients = analytic.named();
    for (size_t k = 0; k < inputs.size(); ++k) {
      std::vector<double>& x = *inputs[k].second;
      std::vector<double> numeric(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        x[i] = saved + kStep;
        const double above = loss(p, dy);
        x[i] = saved - kStep;
        const double below = loss(p, dy);
        x[i] = saved;
        numeric[i] = (above - below) / (2 * kStep);
      }
      const double error = harness::relative_error(numeric, *gradients[k].second);
      const bool ok = error <= kFiniteDifferenceTolerance;
      failures += !ok;
      std::printf("%s reference gradient d%s groups=%d softplus=%d vs finite differences rel_err=%.2e\n",
                  ok ? "ok" : "FAIL", inputs[k].first, c.groups, c.softplus, error);
    }
  }
  return failures;
}

// An output of the kernels against its reference.
struct Check {
  const char* name;
  const GuardedBuffer<float>& actual;
  const std::vector<double>& expected;
  double tolerance;
};

// Forward then backward on one case, buffers as scan_binding.cpp makes them; returns 1 if it failed, else 0.
template <typename T>
int run_case(const Case& c, ScanDtype dtype) {
  const unsigned seed = harness::case_seed(c);
  emu::rng.seed(seed);
  const harness::Inputs<T> in(c, seed);
  const harness::Problem problem = harness::to_problem(c, in);
  const GuardedBuffer<float> dy = harness::standard_normal(problem.x.u.size(), seed + 1);
  const std::vector<double> expected_y = harness::reference_forward(problem);
  const harness::Tensors expected = harness::reference_backward(problem, harness::to_double(dy));

  // make_params(): the inputs and the tiling.
  ScanParams p{};
  p.batch = kBatch, p.channels = c.channels, p.groups = c.groups, p.state = c.state, p.length = c.length;
  p.softplus = c.softplus;
  mambaseg::choose_tiling(p);
  p.u = in.u.data(), p.delta = in.delta.data(), p.A = in.A.data(), p.Bm = in.Bm.data(), p.Cm = in.Cm.data();
  p.bc_group_stride = static_cast<int64_t>(c.state) * c.length;  // contiguous, as the training path requires
  if (c.skip_and_bias) p.D = in.D.data(), p.delta_bias = in.bias.data();
  const ScanParams inputs = p;
  // tile_buffer(): (rows, n_tiles, per tile), no tile at all (size 0) when a row fits one tile. The kernels
  // then still form pointers into it but must not touch it: here any access lands in the guards.
  const size_t rows = kBatch * c.channels, steps = rows * c.length;
  const size_t tiles = rows * (p.n_tiles > 1 ? p.n_tiles : 0);

  // forward(): y and the tile buffers empty (NaN here).
  GuardedBuffer<float> y(steps), maps(tiles * 2 * c.state), carries(tiles * c.state);
  p.y = y.data(), p.tile_maps = maps.data(), p.tile_carries = carries.data();
  const auto start = std::chrono::steady_clock::now();
  mambaseg::launch_scan_fwd(p, dtype, nullptr);

  // backward(): fresh parameters; du, ddelta and the reverse tile buffers empty, the reduced gradients zero.
  p = inputs;
  p.dy = dy.data(), p.tile_carries = carries.data();
  GuardedBuffer<float> du(steps), ddelta(steps), reverse_maps(tiles * 2 * c.state), reverse_carries(tiles * c.state);
  GuardedBuffer<float> dA(in.A.size(), 0.f), dB(in.Bm.size(), 0.f), dC(in.Cm.size(), 0.f);
  // dD and ddelta_bias only where D and delta_bias are given (else empty, and null to the kernel).
  GuardedBuffer<float> dD(c.skip_and_bias ? c.channels : 0, 0.f), dbias(c.skip_and_bias ? c.channels : 0, 0.f);
  p.du = du.data(), p.ddelta = ddelta.data(), p.dA = dA.data(), p.dB = dB.data(), p.dC = dC.data();
  if (c.skip_and_bias) p.dD = dD.data(), p.dbias = dbias.data();
  p.reverse_maps = reverse_maps.data(), p.reverse_carries = reverse_carries.data();
  mambaseg::launch_scan_bwd(p, dtype, nullptr);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  bool ok = true;
  std::string errors;
  std::vector<Check> checks = {{"y", y, expected_y, kForwardTolerance},
                               {"du", du, expected.u, kGradientTolerance},
                               {"ddelta", ddelta, expected.delta, kGradientTolerance},
                               {"dA", dA, expected.A, kGradientTolerance},
                               {"dB", dB, expected.B, kGradientTolerance},
                               {"dC", dC, expected.C, kGradientTolerance}};
  if (c.skip_and_bias) {
    checks.push_back({"dD", dD, expected.D, kGradientTolerance});
    checks.push_back({"ddelta_bias", dbias, expected.delta_bias, kGradientTolerance});
  }
  for (const Check& check : checks) {
    const double error = harness::relative_error(check.actual, check.expected);
    const bool intact = check.actual.intact();
    ok = ok && error <= check.tolerance && intact;
    char text[64];
    std::snprintf(text, sizeof text, " %s=%.1e%s", check.name, error, intact ? "" : "(OUT-OF-BOUNDS)");
    errors += text;
  }
  const bool tile_buffers_intact =
      maps.intact() && carries.intact() && reverse_maps.intact() && reverse_carries.intact();
  ok = ok && tile_buffers_intact;
  std::printf("%s %s tiles=%d threads=%d rel_err%s%s (%.2fs)\n", ok ? "ok" : "FAIL", harness::describe(c).c_str(),
              p.n_tiles, p.threads, errors.c_str(), tile_buffers_intact ? "" : " tile buffers written OUT-OF-BOUNDS",
              seconds);
  std::fflush(stdout);
  return !ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Case> cases;
  if (!harness::parse_cases(argc, argv, cases)) return 2;
  int failures = check_reference_gradients();
  for (const Case& c : cases)
    failures += harness::run_in_dtype(c, [&](auto element, ScanDtype dtype) {
      return run_case<decltype(element)>(c, dtype);
    });
  std::printf("%d failed checks, %lld context switches\n", failures, emu::context_switches);
  return failures == 0 ? 0 : 1;
}
