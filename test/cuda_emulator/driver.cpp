// Runs the emulated inference scan kernel (every compiled configuration) on the cases given in argv and checks
// it against a float64 reference. One line per (case, configuration), "ok" or "FAIL"; exit status 1 on any
// failure, 2 on a bad argument.
//
// Usage: driver CASE...   with CASE = dtype,N,L,groups,softplus   e.g. fp32,16,37,2,1   (dtype: fp32, bf16, fp16)
//
// Checks per configuration: max |y - reference| / max |reference| <= kTolerance (every y written and finite),
// and bit-identical y across configurations that differ only in states per pass (the kernel sums the states
// in the same order whatever kStates).
// Needs the kernel sources with launches rewritten for emu.h (see test/test_selective_scan_emulated.py).
#include "emu.h"
#include "scan_fwd_infer.cu"

#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <utility>

namespace {

using mambaseg::InferConfig;
using mambaseg::ScanDtype;
using mambaseg::ScanParams;

constexpr int kBatch = 2, kChannels = 2;
constexpr double kTolerance = 2e-5;  // relative to max |reference|; as the fp32 forward tolerance of the GPU tests

struct Case {
  std::string dtype;
  int state, length, groups;
  bool softplus;
};

// Parses "dtype,N,L,groups,softplus"; false if malformed.
bool parse_case(const char* text, Case& out) {
  char dtype[8];
  int softplus = -1;
  char tail;
  if (std::sscanf(text, "%7[a-z0-9],%d,%d,%d,%d%c", dtype, &out.state, &out.length, &out.groups, &softplus, &tail) != 5)
    return false;
  out.dtype = dtype;
  out.softplus = softplus == 1;
  const bool known_dtype = out.dtype == "fp32" || out.dtype == "bf16" || out.dtype == "fp16";
  return known_dtype && out.state >= 1 && out.state <= 16 && out.length >= 1 && (out.groups == 1 || out.groups == 2) &&
         (softplus == 0 || softplus == 1);
}

float to_host_float(float x) { return x; }
float to_host_float(__nv_bfloat16 x) { return __bfloat162float(x); }
float to_host_float(__half x) { return __half2float(x); }
template <typename T>
T from_host_float(float x);
template <>
float from_host_float<float>(float x) {
  return x;
}
template <>
__nv_bfloat16 from_host_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <>
__half from_host_float<__half>(float x) {
  return __float2half(x);
}

// Inputs shaped like the model's: u, delta (B, C, L), B and C (B, K, N, L) in T; A = -exp(.) < 0, D, bias fp32.
template <typename T>
struct Inputs {
  std::vector<T> u, delta, Bm, Cm;
  std::vector<float> A, D, bias;

  Inputs(const Case& c, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    const size_t rows = kBatch * kChannels, group_rows = static_cast<size_t>(kBatch) * c.groups * c.state;
    auto fill = [&](std::vector<T>& v, size_t n, auto draw) {
      v.resize(n);
      for (T& x : v) x = from_host_float<T>(draw());
    };
    fill(u, rows * c.length, [&] { return normal(gen); });
    // Around the softplus knee, or (no softplus) a small positive step: a negative dt would make h grow.
    fill(delta, rows * c.length,
         [&] { return c.softplus ? 0.5f * normal(gen) - 1.f : 0.2f * std::fabs(normal(gen)); });
    fill(Bm, group_rows * c.length, [&] { return normal(gen); });
    fill(Cm, group_rows * c.length, [&] { return normal(gen); });
    for (int i = 0; i < kChannels * c.state; ++i) A.push_back(-std::exp(0.5f * normal(gen)));
    for (int i = 0; i < kChannels; ++i) {
      D.push_back(normal(gen));
      const float b = 0.3f * normal(gen);
      bias.push_back(c.softplus ? b : std::fabs(b));  // dt = delta + bias > 0 without softplus
    }
  }
};

// Sequential scan in float64 from the (rounded) inputs: y (B, C, L).
template <typename T>
std::vector<double> reference_scan(const Case& c, const Inputs<T>& in) {
  const int L = c.length, N = c.state;
  std::vector<double> y(static_cast<size_t>(kBatch) * kChannels * L);
  for (int b = 0; b < kBatch; ++b)
    for (int ch = 0; ch < kChannels; ++ch) {
      const int group = ch / (kChannels / c.groups);
      const size_t row = static_cast<size_t>(b) * kChannels + ch;
      std::vector<double> h(N, 0.0);
      for (int t = 0; t < L; ++t) {
        double dt = to_host_float(in.delta[row * L + t]) + static_cast<double>(in.bias[ch]);
        if (c.softplus) dt = dt <= 20 ? std::log1p(std::exp(dt)) : dt;
        const double u = to_host_float(in.u[row * L + t]);
        double out = in.D[ch] * u;
        for (int n = 0; n < N; ++n) {
          const size_t index = ((static_cast<size_t>(b) * c.groups + group) * N + n) * L + t;
          h[n] = std::exp(dt * in.A[ch * N + n]) * h[n] + dt * u * to_host_float(in.Bm[index]);
          out += to_host_float(in.Cm[index]) * h[n];
        }
        y[row * L + t] = out;
      }
    }
  return y;
}

// Max |y - reference| / max |reference|; infinite if any y is unwritten (NaN) or not finite.
double relative_error(const std::vector<float>& y, const std::vector<double>& reference) {
  double scale = 1e-30, error = 0;
  for (double r : reference) scale = std::max(scale, std::fabs(r));
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) return INFINITY;
    error = std::max(error, std::fabs(y[i] - reference[i]) / scale);
  }
  return error;
}

// Runs every compiled configuration on one case; returns the number of failed checks.
template <typename T>
int run_case(const Case& c, ScanDtype dtype) {
  const unsigned seed = 1000003u * c.state + 7919u * c.length + 31u * c.groups + c.softplus;
  emu::rng.seed(seed);  // each case's schedule is reproducible on its own
  const Inputs<T> in(c, seed);
  const std::vector<double> reference = reference_scan(c, in);
  for (double r : reference)
    if (!std::isfinite(r)) emu::fail("the float64 reference is not finite: the driver's inputs are bad");

  ScanParams p{};
  p.batch = kBatch, p.channels = kChannels, p.groups = c.groups, p.state = c.state, p.length = c.length;
  p.softplus = c.softplus;
  p.u = in.u.data(), p.delta = in.delta.data(), p.Bm = in.Bm.data(), p.Cm = in.Cm.data();
  p.A = in.A.data(), p.D = in.D.data(), p.delta_bias = in.bias.data();

  std::vector<InferConfig> configs = mambaseg::compiled_infer_configs(dtype, c.state);
  // Fewest states first: the first configuration of each (items, warps) is the one the others must match.
  std::stable_sort(configs.begin(), configs.end(), [](const InferConfig& a, const InferConfig& b) {
    return a.states < b.states;
  });
  std::map<std::pair<int, int>, std::pair<InferConfig, std::vector<float>>> first_of_shape;
  int failures = 0;
  for (const InferConfig& config : configs) {
    std::vector<float> y(reference.size(), NAN);
    p.y = y.data();
    const auto start = std::chrono::steady_clock::now();
    const bool launched = mambaseg::launch_scan_fwd_infer_config(p, dtype, config, nullptr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double error = launched ? relative_error(y, reference) : INFINITY;
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
    failures += !ok;
    std::printf("%s %s N=%d L=%d groups=%d softplus=%d config=(%d,%d,%d) %s rel_err=%.2e%s (%.2fs)\n",
                ok ? "ok" : "FAIL", c.dtype.c_str(), c.state, c.length, c.groups, c.softplus, config.items,
                config.warps, config.states, launched ? "launched" : "NOT-LAUNCHED", error, bitwise, seconds);
    std::fflush(stdout);
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Case> cases(argc - 1);
  for (int i = 1; i < argc; ++i)
    if (!parse_case(argv[i], cases[i - 1])) {
      std::fprintf(stderr, "bad case '%s': expected dtype,N,L,groups,softplus with dtype fp32|bf16|fp16, N in 1..16, "
                   "L >= 1, groups 1|2, softplus 0|1\n", argv[i]);
      return 2;
    }
  if (cases.empty()) {
    std::fprintf(stderr, "usage: %s dtype,N,L,groups,softplus ...   e.g. fp32,16,37,2,1\n", argv[0]);
    return 2;
  }
  int failures = 0;
  for (const Case& c : cases) {
    if (c.dtype == "fp32") failures += run_case<float>(c, ScanDtype::kFloat32);
    if (c.dtype == "bf16") failures += run_case<__nv_bfloat16>(c, ScanDtype::kBFloat16);
    if (c.dtype == "fp16") failures += run_case<__half>(c, ScanDtype::kFloat16);
  }
  std::printf("%d failed checks, %lld context switches\n", failures, emu::context_switches);
  return failures == 0 ? 0 : 1;
}
