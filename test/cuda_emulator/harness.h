// What the emulator drivers share: the test case format, guarded host buffers standing in for device memory,
// random inputs shaped like the model's, and the float64 reference of the selective scan, forward and
// backward (gradients of loss = sum(y * dy)).
//
// Shapes: rows = B * C; u, delta (B, C, L); B and C (B, K, N, L); A (C, N); D, delta_bias (C,).
// Include after emu.h (it needs the CUDA half and bfloat16 host types).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "scan_params.h"

namespace harness {

constexpr int kBatch = 2, kChannels = 2;

struct Case {
  std::string dtype;
  int state, length, groups;
  bool softplus;
  bool skip_and_bias = true;  // D and delta_bias given (else null, and zero in the reference)
  int channels = kChannels;   // more than 32 per group fill the state-resident kernel's warps
};

// Parses "dtype,N,L,groups,softplus[,skip_and_bias[,channels]]" (dtype fp32, bf16 or fp16; N in 1..16; 0 or 1
// flags, skip_and_bias 1 and channels kChannels if left out; groups dividing channels); false if malformed.
inline bool parse_case(const char* text, Case& out) {
  char dtype[8];
  int softplus = -1, skip_and_bias = 1, end = 0, end_with_flag = 0, end_with_channels = 0;
  if (std::sscanf(text, "%7[a-z0-9],%d,%d,%d,%d%n,%d%n,%d%n", dtype, &out.state, &out.length, &out.groups, &softplus,
                  &end, &skip_and_bias, &end_with_flag, &out.channels, &end_with_channels) < 5)
    return false;
  const size_t consumed = end_with_channels ? end_with_channels : end_with_flag ? end_with_flag : end;
  out.dtype = dtype;
  out.softplus = softplus == 1;
  out.skip_and_bias = skip_and_bias == 1;
  const bool known_dtype = out.dtype == "fp32" || out.dtype == "bf16" || out.dtype == "fp16";
  return consumed == std::strlen(text) && known_dtype && out.state >= 1 && out.state <= 16 && out.length >= 1 &&
         out.channels >= 1 && out.channels <= 256 && out.groups >= 1 && out.channels % out.groups == 0 &&
         (softplus == 0 || softplus == 1) && (skip_and_bias == 0 || skip_and_bias == 1);
}

// "dtype N=.. L=.. groups=.. softplus=.. skip_and_bias=..[ channels=..]", as the drivers' lines name a case.
inline std::string describe(const Case& c) {
  char text[160];
  const int written = std::snprintf(text, sizeof text, "%s N=%d L=%d groups=%d softplus=%d skip_and_bias=%d",
                                    c.dtype.c_str(), c.state, c.length, c.groups, c.softplus, c.skip_and_bias);
  if (c.channels != kChannels) std::snprintf(text + written, sizeof text - written, " channels=%d", c.channels);
  return text;
}

// Parses every argument of a driver's command line into `cases`; false (after printing why) if there is none
// or one is malformed.
inline bool parse_cases(int argc, char** argv, std::vector<Case>& cases) {
  cases.resize(argc - 1);
  for (int i = 1; i < argc; ++i)
    if (!parse_case(argv[i], cases[i - 1])) {
      std::fprintf(stderr, "bad case '%s': expected dtype,N,L,groups,softplus[,skip_and_bias[,channels]] with dtype "
                   "fp32|bf16|fp16, N in 1..16, L >= 1, channels in 1..256 divisible by groups, softplus and "
                   "skip_and_bias 0|1\n", argv[i]);
      return false;
    }
  if (cases.empty())
    std::fprintf(stderr, "usage: %s dtype,N,L,groups,softplus[,skip_and_bias] ...   e.g. fp32,16,37,2,1\n", argv[0]);
  return !cases.empty();
}

// A seed of its own per case, so that each case's inputs and schedule are reproducible on their own.
inline unsigned case_seed(const Case& c) {
  return 1000003u * c.state + 7919u * c.length + 31u * c.groups + c.softplus + 104729u * (c.channels - kChannels);
}

inline float to_host_float(float x) { return x; }
inline float to_host_float(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_host_float(__half x) { return __half2float(x); }
template <typename T>
T from_host_float(float x);
template <>
inline float from_host_float<float>(float x) {
  return x;
}
template <>
inline __nv_bfloat16 from_host_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <>
inline __half from_host_float<__half>(float x) {
  return __float2half(x);
}

// Returns run(T{}, dtype) for the element type T of the case's dtype.
template <typename Run>
int run_in_dtype(const Case& c, Run run) {
  if (c.dtype == "bf16") return run(__nv_bfloat16{}, mambaseg::ScanDtype::kBFloat16);
  if (c.dtype == "fp16") return run(__half{}, mambaseg::ScanDtype::kFloat16);
  return run(float{}, mambaseg::ScanDtype::kFloat32);
}

// Stands in for a device buffer of `size` elements: NaN guard elements on both sides catch a kernel reading
// past either end (the NaN reaches the result) or writing there (intact() turns false). The guard keeps the
// data 16-byte aligned, as the kernels' vector loads expect of a tensor.
template <typename T>
class GuardedBuffer {
 public:
  static constexpr size_t kGuard = 32;

  explicit GuardedBuffer(size_t size = 0, float fill = NAN) : size_(size), storage_(size + 2 * kGuard) {
    for (T& x : storage_) x = from_host_float<T>(NAN);
    for (size_t i = 0; i < size; ++i) (*this)[i] = from_host_float<T>(fill);
  }
  size_t size() const { return size_; }
  T* data() { return storage_.data() + kGuard; }
  const T* data() const { return storage_.data() + kGuard; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  // Every guard element still NaN (nothing was written out of bounds).
  bool intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (!std::isnan(to_host_float(storage_[i])) || !std::isnan(to_host_float(storage_[kGuard + size_ + i])))
        return false;
    return true;
  }

 private:
  size_t size_;
  std::vector<T> storage_;
};

// `size` values of draw(), rounded to T.
template <typename T, typename Draw>
GuardedBuffer<T> random_buffer(size_t size, Draw draw) {
  GuardedBuffer<T> buffer(size);
  for (size_t i = 0; i < size; ++i) buffer[i] = from_host_float<T>(draw());
  return buffer;
}

// `size` standard normal values drawn from `seed`, in fp32 (as the kernels take dy).
inline GuardedBuffer<float> standard_normal(size_t size, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  return random_buffer<float>(size, [&] { return normal(gen); });
}

// Inputs shaped like the model's: u, delta, B and C in T; A = -exp(.) < 0, D, bias fp32 (zero when the case
// leaves them out).
template <typename T>
struct Inputs {
  GuardedBuffer<T> u, delta, Bm, Cm;
  GuardedBuffer<float> A, D, bias;

  Inputs(const Case& c, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    auto standard = [&] { return normal(gen); };
    const size_t steps = static_cast<size_t>(kBatch) * c.channels * c.length;
    const size_t group_steps = static_cast<size_t>(kBatch) * c.groups * c.state * c.length;
    u = random_buffer<T>(steps, standard);
    // Around the softplus knee, or (no softplus) a small positive step: a negative dt would make h grow.
    delta = random_buffer<T>(steps, [&] {
      return c.softplus ? 0.5f * normal(gen) - 1.f : 0.2f * std::fabs(normal(gen));
    });
    Bm = random_buffer<T>(group_steps, standard);
    Cm = random_buffer<T>(group_steps, standard);
    A = random_buffer<float>(static_cast<size_t>(c.channels) * c.state, [&] { return -std::exp(0.5f * normal(gen)); });
    D = random_buffer<float>(c.channels, standard);
    // dt = delta + bias > 0 without softplus.
    bias = random_buffer<float>(c.channels, [&] {
      return c.softplus ? 0.3f * normal(gen) : std::fabs(0.3f * normal(gen));
    });
    if (!c.skip_and_bias) D = GuardedBuffer<float>(c.channels, 0.f), bias = GuardedBuffer<float>(c.channels, 0.f);
  }
};

// The tensors of a problem, or their gradients, in float64 (names as in the Python API).
struct Tensors {
  std::vector<double> u, delta, A, B, C, D, delta_bias;

  std::vector<std::pair<const char*, std::vector<double>*>> named() {
    return {{"u", &u}, {"delta", &delta}, {"A", &A}, {"B", &B}, {"C", &C}, {"D", &D}, {"delta_bias", &delta_bias}};
  }
};

struct Problem {
  int batch, channels, groups, state, length;
  bool softplus;
  Tensors x;
};

template <typename T>
std::vector<double> to_double(const GuardedBuffer<T>& buffer) {
  std::vector<double> out(buffer.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = to_host_float(buffer[i]);
  return out;
}

// The problem the kernels see: the inputs as rounded to T, exactly.
template <typename T>
Problem to_problem(const Case& c, const Inputs<T>& in) {
  return {kBatch,
          c.channels,
          c.groups,
          c.state,
          c.length,
          c.softplus,
          {to_double(in.u), to_double(in.delta), to_double(in.A), to_double(in.Bm), to_double(in.Cm),
           to_double(in.D), to_double(in.bias)}};
}

inline double softplus(double x) { return x <= 20 ? std::log1p(std::exp(x)) : x; }

// Visits every (row, state) of `p` with the row's index, its channel and the offset of its group's state n
// in B and C.
template <typename Visit>
void for_each_row_state(const Problem& p, Visit visit) {
  for (int b = 0; b < p.batch; ++b)
    for (int ch = 0; ch < p.channels; ++ch) {
      const int group = ch / (p.channels / p.groups);
      const size_t row = static_cast<size_t>(b) * p.channels + ch;
      for (int n = 0; n < p.state; ++n)
        visit(row, ch, n, ((static_cast<size_t>(b) * p.groups + group) * p.state + n) * p.length);
    }
}

// dt_t of a row, (L,).
inline std::vector<double> row_dt(const Problem& p, size_t row, int channel) {
  std::vector<double> dt(p.length);
  for (int t = 0; t < p.length; ++t) {
    const double x = p.x.delta[row * p.length + t] + p.x.delta_bias[channel];
    dt[t] = p.softplus ? softplus(x) : x;
  }
  return dt;
}

// y (B, C, L) of the sequential scan h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <C_t, h_t> + D u_t.
inline std::vector<double> reference_forward(const Problem& p) {
  const int L = p.length;
  std::vector<double> y(p.x.u.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = p.x.D[i / L % p.channels] * p.x.u[i];
  for_each_row_state(p, [&](size_t row, int ch, int n, size_t bc) {
    const std::vector<double> dt = row_dt(p, row, ch);
    double h = 0;
    for (int t = 0; t < L; ++t) {
      h = std::exp(dt[t] * p.x.A[ch * p.state + n]) * h + dt[t] * p.x.u[row * L + t] * p.x.B[bc + t];
      y[row * L + t] += p.x.C[bc + t] * h;
    }
  });
  return y;
}

// Gradients of loss = sum(y * dy). With a_t = exp(dt_t A) and g_t = dloss/dh_t, the adjoint recurrence runs
// backwards: g_t = dy_t C_t + a_{t+1} g_{t+1} (g past the end is 0). Then dC_t = dy_t h_t,
// dB_t = g_t dt_t u_t, du_t = D dy_t + sum_n g_t dt_t B_t, ddt_t = sum_n g_t (u_t B_t + A a_t h_{t-1}),
// dA = sum_t g_t dt_t a_t h_{t-1}, dD = sum_t dy_t u_t; ddelta_t = ddt_t softplus'(.) and
// ddelta_bias = sum_t ddelta_t. B and C gradients sum over the channels of their group.
inline Tensors reference_backward(const Problem& p, const std::vector<double>& dy) {
  const int L = p.length, N = p.state;
  Tensors d;
  auto zeros_like = [](const std::vector<double>& v) { return std::vector<double>(v.size(), 0.0); };
  d.u = zeros_like(p.x.u), d.delta = zeros_like(p.x.delta), d.A = zeros_like(p.x.A), d.B = zeros_like(p.x.B);
  d.C = zeros_like(p.x.C), d.D = zeros_like(p.x.D), d.delta_bias = zeros_like(p.x.delta_bias);
  for (size_t i = 0; i < dy.size(); ++i) {
    const int ch = static_cast<int>(i / L % p.channels);
    d.u[i] += p.x.D[ch] * dy[i];
    d.D[ch] += dy[i] * p.x.u[i];
  }
  // ddt per step, summed over the states before the chain rule through softplus.
  std::vector<double> ddt(p.x.delta.size(), 0.0), h(L);
  for_each_row_state(p, [&](size_t row, int ch, int n, size_t bc) {
    const std::vector<double> dt = row_dt(p, row, ch);
    const double A = p.x.A[ch * N + n];
    const double* u = &p.x.u[row * L];
    double state = 0;
    for (int t = 0; t < L; ++t) h[t] = state = std::exp(dt[t] * A) * state + dt[t] * u[t] * p.x.B[bc + t];
    double g_next = 0, a_next = 0;
    for (int t = L - 1; t >= 0; --t) {
      const double a = std::exp(dt[t] * A), h_before = t > 0 ? h[t - 1] : 0.0;
      const double g = dy[row * L + t] * p.x.C[bc + t] + a_next * g_next;
      d.C[bc + t] += dy[row * L + t] * h[t];
      d.B[bc + t] += g * dt[t] * u[t];
      d.u[row * L + t] += g * dt[t] * p.x.B[bc + t];
      ddt[row * L + t] += g * (u[t] * p.x.B[bc + t] + A * a * h_before);
      d.A[ch * N + n] += g * dt[t] * a * h_before;
      g_next = g, a_next = a;
    }
  });
  for (size_t i = 0; i < ddt.size(); ++i) {
    const int ch = static_cast<int>(i / L % p.channels);
    const double x = p.x.delta[i] + p.x.delta_bias[ch];
    d.delta[i] = p.softplus ? ddt[i] / (1 + std::exp(-x)) : ddt[i];  // softplus' = sigmoid
    d.delta_bias[ch] += d.delta[i];
  }
  return d;
}

// Max |actual - expected| / max |expected|; infinite if any actual value is not finite (or was never written,
// NaN) or the sizes differ.
template <typename Actual>
double relative_error(const Actual& actual, const std::vector<double>& expected) {
  if (actual.size() != expected.size()) return INFINITY;
  double scale = 1e-30, error = 0;
  for (double e : expected) scale = std::max(scale, std::fabs(e));
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    error = std::max(error, std::fabs(actual[i] - expected[i]) / scale);
  }
  return error;
}

}  // namespace harness
