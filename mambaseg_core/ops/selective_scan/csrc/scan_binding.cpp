// Python binding of the selective-scan kernels: checks every tensor, then launches on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "scan_infer.h"
#include "scan_params.h"

namespace {

using mambaseg::InferConfig;
using mambaseg::ScanDtype;
using mambaseg::ScanParams;

// Input errors are thrown as std exceptions, which pybind11 raises as RuntimeError (ValueError for
// std::invalid_argument). Their messages are built without iostreams: on the H100 host (torch 2.11, CUDA 13,
// g++ 13) formatting a number through an ostream inside this extension crashed the process with a segfault
// (TORCH_CHECK with number or shape arguments too), while messages of plain text raised.
std::string text(const char* part) { return part; }
std::string text(const std::string& part) { return part; }
std::string text(int64_t part) { return std::to_string(part); }
std::string text(at::ScalarType part) { return c10::toString(part); }
std::string text(c10::Device part) { return part.is_cuda() ? "cuda:" + std::to_string(part.index()) : "cpu"; }
std::string text(at::IntArrayRef part) {
  std::string out = "[";
  for (size_t i = 0; i < part.size(); ++i) out += (i ? ", " : "") + std::to_string(part[i]);
  return out + "]";
}

template <typename Error = std::runtime_error, typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(("selective_scan cuda: " + ... + text(parts)));
}

template <typename Error = std::runtime_error, typename... Parts>
void require(bool ok, const Parts&... parts) {
  if (!ok) fail<Error>(parts...);
}

ScanDtype scan_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return ScanDtype::kFloat32;
    case at::kHalf: return ScanDtype::kFloat16;
    case at::kBFloat16: return ScanDtype::kBFloat16;
    default: break;
  }
  fail("u must be float32, float16 or bfloat16, got ", dtype);
}

void check_tensor(const at::Tensor& x, const char* name, const at::Tensor& u, at::ScalarType dtype,
                  std::vector<int64_t> shape, bool contiguous = true) {
  require(x.is_cuda() && x.device() == u.device(), name, " must be on ", u.device(), ", got ", x.device());
  require(x.scalar_type() == dtype, name, " must be ", dtype, ", got ", x.scalar_type());
  require(x.sizes() == at::IntArrayRef(shape), name, " must have shape ", at::IntArrayRef(shape), ", got ",
          x.sizes());
  require(!contiguous || x.is_contiguous(), name, " must be contiguous");
}

// The stride between the (batch, group) slabs of x (batch, groups, N, L) if each slab is N * L contiguous elements
// and the slabs are evenly spaced (ScanParams::bc_group_stride); -1 otherwise.
int64_t slab_stride(const at::Tensor& x) {
  const int64_t batch = x.size(0), groups = x.size(1), state = x.size(2), length = x.size(3);
  if ((length > 1 && x.stride(3) != 1) || (state > 1 && x.stride(2) != length)) return -1;
  if (batch * groups == 1) return state * length;
  const int64_t stride = groups > 1 ? x.stride(1) : x.stride(0);
  if (batch > 1 && groups > 1 && x.stride(0) != groups * stride) return -1;
  return stride >= state * length ? stride : -1;  // slabs must not overlap
}

// Validates the inputs and fills the input half of the parameters. B and C must be contiguous unless
// `strided_bc`, where they may be evenly spaced slabs (slab_stride), the same for both.
ScanParams make_params(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                       const at::Tensor& C, const std::optional<at::Tensor>& D,
                       const std::optional<at::Tensor>& delta_bias, bool softplus, bool strided_bc = false) {
  require(u.is_cuda(), "u must be a CUDA tensor");
  require(u.dim() == 3, "u must be (batch, channels, L), got ", u.sizes());
  require(B.dim() == 4, "B must be (batch, groups, N, L), got ", B.sizes());
  require(A.dim() == 2, "A must be (channels, N), got ", A.sizes());
  const int64_t batch = u.size(0), channels = u.size(1), length = u.size(2), groups = B.size(1), state = A.size(1);
  require(state >= 1 && state <= 16, "N must be in 1..16, got ", state);
  require(groups >= 1 && channels % groups == 0, "channels (", channels, ") must be divisible by groups (", groups,
          ")");
  require(length >= 1 && batch * channels * length < (int64_t(1) << 31),
          "need 1 <= L and batch*channels*L < 2^31, got ", u.sizes());
  const auto dtype = u.scalar_type();
  scan_dtype(dtype);
  check_tensor(u, "u", u, dtype, {batch, channels, length});
  check_tensor(delta, "delta", u, dtype, {batch, channels, length});
  check_tensor(A, "A", u, at::kFloat, {channels, state});
  check_tensor(B, "B", u, dtype, {batch, groups, state, length}, !strided_bc);
  check_tensor(C, "C", u, dtype, {batch, groups, state, length}, !strided_bc);
  const int64_t bc_group_stride = slab_stride(B);
  require(bc_group_stride >= 0 && slab_stride(C) == bc_group_stride,
          "B and C must be evenly spaced contiguous (N, L) slabs with the same strides, got strides ", B.strides(),
          " and ", C.strides());
  if (D) check_tensor(*D, "D", u, at::kFloat, {channels});
  if (delta_bias) check_tensor(*delta_bias, "delta_bias", u, at::kFloat, {channels});

  ScanParams p{};
  p.batch = batch, p.channels = channels, p.groups = groups, p.state = state, p.length = length;
  p.softplus = softplus;
  mambaseg::choose_tiling(p);
  p.u = u.data_ptr(), p.delta = delta.data_ptr(), p.A = A.data_ptr<float>();
  p.Bm = B.data_ptr(), p.Cm = C.data_ptr(), p.bc_group_stride = bc_group_stride;
  p.D = D ? D->data_ptr<float>() : nullptr;
  p.delta_bias = delta_bias ? delta_bias->data_ptr<float>() : nullptr;
  return p;
}

// Per-tile buffers (rows, n_tiles, per_tile) fp32; rows that fit one tile need none.
at::Tensor tile_buffer(const ScanParams& p, const at::Tensor& u, int64_t per_tile) {
  const int64_t tiles = p.n_tiles > 1 ? p.n_tiles : 0;
  return at::empty({int64_t(p.batch) * p.channels, tiles, per_tile}, u.options().dtype(at::kFloat));
}

void check_launch() {
  const cudaError_t err = cudaGetLastError();
  require(err == cudaSuccess, "kernel launch failed: ", cudaGetErrorString(err));
}

// Returns y (batch, channels, L) fp32 and the state entering every tile, (batch*channels, n_tiles, N), for the
// backward (n_tiles = 0 when a row fits one tile).
std::vector<at::Tensor> forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                const std::optional<at::Tensor>& delta_bias, bool softplus) {
  ScanParams p = make_params(u, delta, A, B, C, D, delta_bias, softplus);
  const c10::cuda::CUDAGuard guard(u.device());
  auto f32 = u.options().dtype(at::kFloat);
  at::Tensor y = at::empty(u.sizes(), f32);
  at::Tensor maps = tile_buffer(p, u, 2 * p.state), carries = tile_buffer(p, u, p.state);
  p.y = y.data_ptr(), p.tile_maps = maps.data_ptr<float>(), p.tile_carries = carries.data_ptr<float>();
  mambaseg::launch_scan_fwd(p, scan_dtype(u.scalar_type()), c10::cuda::getCurrentCUDAStream());
  check_launch();
  return {y, carries};
}

// The kernel an inference call runs: a configuration of the warp-scan kernel, or the state-resident kernel with
// segments of `segment_len` steps and `lanes_per_row` lanes a row (0: its defaults).
struct InferKernel {
  std::optional<InferConfig> config;
  std::optional<int> segment_len;
  int lanes_per_row = 0;
};

// Returns y (batch, channels, L), fp32 or, with y_in_input_dtype, in u's dtype; nothing is kept for a backward.
// Runs `kernel`, or the default if it names none: the state-resident kernel where uses_resident says so, else the
// warp-scan kernel's default configuration.
at::Tensor run_forward_infer(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const std::optional<at::Tensor>& D,
                             const std::optional<at::Tensor>& delta_bias, bool softplus, bool y_in_input_dtype,
                             InferKernel kernel) {
  // B and C as they are where the kernel reads them in place (slices of one projection), else contiguous copies.
  const bool in_place = B.dim() == 4 && C.dim() == 4 && slab_stride(B) >= 0 && slab_stride(B) == slab_stride(C);
  const at::Tensor Bk = in_place ? B : B.contiguous(), Ck = in_place ? C : C.contiguous();
  ScanParams p = make_params(u, delta, A, Bk, Ck, D, delta_bias, softplus, /*strided_bc=*/true);
  const ScanDtype dtype = scan_dtype(u.scalar_type());
  if (const auto& config = kernel.config) {
    const auto compiled = mambaseg::compiled_infer_configs(dtype, p.state);
    if (std::find(compiled.begin(), compiled.end(), *config) == compiled.end()) {
      std::string names;
      for (const InferConfig& c : compiled)
        names += " (" + text(c.items) + ", " + text(c.warps) + ", " + text(c.states) + ")";
      fail<std::invalid_argument>("inference configuration (items=", config->items, ", warps=", config->warps,
                                  ", states=", config->states, ") is not compiled for ", u.scalar_type(),
                                  " inputs with N=", p.state, "; compiled (items, warps, states):", names);
    }
  } else if (!kernel.segment_len && mambaseg::uses_resident(p.batch * p.channels, p.length, p.state)) {
    kernel.segment_len = 0;
  }
  if (kernel.segment_len) {
    require<std::invalid_argument>(p.state >= mambaseg::kResidentMinState, "the state-resident kernel needs N >= ",
                                   mambaseg::kResidentMinState, ", got N=", p.state);
    require<std::invalid_argument>(*kernel.segment_len >= 0, "segment_len must be >= 0, got ", *kernel.segment_len);
    const int lanes = kernel.lanes_per_row;
    require<std::invalid_argument>(lanes == 0 || lanes == 1 || lanes == 2 || lanes == 4,
                                   "lanes_per_row must be 1, 2 or 4 (0: the default), got ", lanes);
    mambaseg::plan_resident(p, *kernel.segment_len, kernel.lanes_per_row);
  }
  const c10::cuda::CUDAGuard guard(u.device());
  at::Tensor y = at::empty(u.sizes(), y_in_input_dtype ? u.options() : u.options().dtype(at::kFloat));
  p.y = y.data_ptr(), p.y_in_input_dtype = y_in_input_dtype;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (kernel.config) {
    require(mambaseg::launch_scan_fwd_infer_config(p, dtype, *kernel.config, stream),
            "a listed inference configuration did not launch (a bug)");
  } else if (kernel.segment_len) {
    at::Tensor maps = tile_buffer(p, u, 2 * p.state), carries = tile_buffer(p, u, p.state);
    p.tile_maps = maps.data_ptr<float>(), p.tile_carries = carries.data_ptr<float>();
    mambaseg::launch_scan_fwd_resident(p, dtype, stream);
  } else {
    mambaseg::launch_scan_fwd_infer(p, dtype, stream);
  }
  check_launch();
  return y;
}

at::Tensor forward_infer(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                         const at::Tensor& C, const std::optional<at::Tensor>& D,
                         const std::optional<at::Tensor>& delta_bias, bool softplus, bool y_in_input_dtype) {
  return run_forward_infer(u, delta, A, B, C, D, delta_bias, softplus, y_in_input_dtype, {});
}

// The warp-scan inference kernel in one explicit configuration (for tuning); ValueError if it is not compiled.
at::Tensor forward_infer_config(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                const std::optional<at::Tensor>& delta_bias, bool softplus, bool y_in_input_dtype,
                                int64_t items, int64_t warps, int64_t states) {
  const InferConfig config{static_cast<int>(items), static_cast<int>(warps), static_cast<int>(states)};
  return run_forward_infer(u, delta, A, B, C, D, delta_bias, softplus, y_in_input_dtype, {config, std::nullopt});
}

// The state-resident inference kernel with segments of `segment_len` steps and `lanes_per_row` lanes a row (0: its
// defaults); ValueError if N < 9.
at::Tensor forward_infer_resident(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& delta_bias, bool softplus, bool y_in_input_dtype,
                                  int64_t segment_len, int64_t lanes_per_row) {
  require<std::invalid_argument>(segment_len >= 0 && segment_len < (int64_t(1) << 31),
                                 "segment_len must be in [0, 2^31), got ", segment_len);
  return run_forward_infer(u, delta, A, B, C, D, delta_bias, softplus, y_in_input_dtype,
                           {std::nullopt, static_cast<int>(segment_len), static_cast<int>(lanes_per_row)});
}

// A launch rule's size argument as an int: sizes past INT32_MAX choose as INT32_MAX does.
int saturated(int64_t size) { return static_cast<int>(std::min<int64_t>(size, INT32_MAX)); }

// Whether the default inference launch takes the state-resident kernel for these shapes.
bool uses_resident_kernel(int64_t rows, int64_t length, int64_t state) {
  require<std::invalid_argument>(rows >= 1 && length >= 1 && state >= 1 && state <= 16,
                                 "need rows, L >= 1 and N in 1..16, got ", rows, ", ", length, ", ", state);
  return mambaseg::uses_resident(saturated(rows), saturated(length), static_cast<int>(state));
}

// (segment steps, segments, lanes a row) of the state-resident kernel's default plan for (batch, channels, groups, L).
std::tuple<int, int, int> resident_plan(int64_t batch, int64_t channels, int64_t groups, int64_t length) {
  require<std::invalid_argument>(batch >= 1 && groups >= 1 && channels % groups == 0 && length >= 1,
                                 "need batch, groups, L >= 1 and channels divisible by groups");
  ScanParams p{};
  p.batch = batch, p.channels = channels, p.groups = groups, p.length = length, p.state = 16;
  mambaseg::plan_resident(p, 0, 0);
  return {p.tile_len, p.n_tiles, p.lanes_per_row};
}

using ConfigTuple = std::tuple<int, int, int>;  // (items, warps, states)

// Every inference configuration compiled for inputs of `dtype` with N = `state`.
std::vector<ConfigTuple> infer_configs(at::ScalarType dtype, int64_t state) {
  require<std::invalid_argument>(state >= 1 && state <= 16, "N must be in 1..16, got ", state);
  std::vector<ConfigTuple> out;
  for (const InferConfig& c : mambaseg::compiled_infer_configs(scan_dtype(dtype), static_cast<int>(state)))
    out.emplace_back(c.items, c.warps, c.states);
  return out;
}

ConfigTuple default_infer_config(int64_t rows, int64_t length, at::ScalarType dtype, int64_t state) {
  require<std::invalid_argument>(rows >= 1 && length >= 1, "rows and L must be >= 1, got ", rows, " and ", length);
  require<std::invalid_argument>(state >= 1 && state <= 16, "N must be in 1..16, got ", state);
  const InferConfig c =
      mambaseg::default_infer_config(saturated(rows), saturated(length), scan_dtype(dtype), static_cast<int>(state));
  return {c.items, c.warps, c.states};
}

// Returns du, ddelta (fp32, u's shape), dA, dB, dC (fp32) and dD, ddelta_bias (fp32, empty when not given).
std::vector<at::Tensor> backward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& delta_bias, bool softplus, const at::Tensor& dy,
                                 const at::Tensor& tile_carries) {
  ScanParams p = make_params(u, delta, A, B, C, D, delta_bias, softplus);
  check_tensor(dy, "dy", u, at::kFloat, {p.batch, p.channels, p.length});
  check_tensor(tile_carries, "tile_carries", u, at::kFloat,
               {int64_t(p.batch) * p.channels, p.n_tiles > 1 ? p.n_tiles : 0, p.state});
  const c10::cuda::CUDAGuard guard(u.device());
  auto f32 = u.options().dtype(at::kFloat);
  at::Tensor du = at::empty(u.sizes(), f32), ddelta = at::empty(u.sizes(), f32);
  at::Tensor dA = at::zeros(A.sizes(), f32), dB = at::zeros(B.sizes(), f32), dC = at::zeros(C.sizes(), f32);
  at::Tensor dD = D ? at::zeros({p.channels}, f32) : at::empty({0}, f32);
  at::Tensor dbias = delta_bias ? at::zeros({p.channels}, f32) : at::empty({0}, f32);
  at::Tensor reverse_maps = tile_buffer(p, u, 2 * p.state), reverse_carries = tile_buffer(p, u, p.state);
  p.dy = dy.data_ptr<float>(), p.tile_carries = tile_carries.data_ptr<float>();
  p.du = du.data_ptr<float>(), p.ddelta = ddelta.data_ptr<float>();
  p.dA = dA.data_ptr<float>(), p.dB = dB.data_ptr<float>(), p.dC = dC.data_ptr<float>();
  p.dD = D ? dD.data_ptr<float>() : nullptr;
  p.dbias = delta_bias ? dbias.data_ptr<float>() : nullptr;
  p.reverse_maps = reverse_maps.data_ptr<float>(), p.reverse_carries = reverse_carries.data_ptr<float>();
  mambaseg::launch_scan_bwd(p, scan_dtype(u.scalar_type()), c10::cuda::getCurrentCUDAStream());
  check_launch();
  return {du, ddelta, dA, dB, dC, dD, dbias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective scan forward: (y, tile_carries)");
  m.def("forward_infer", &forward_infer, "selective scan forward for inference: y (fp32, or in u's dtype)");
  m.def("forward_infer_config", &forward_infer_config,
        "selective scan forward for inference in one compiled configuration (items, warps, states): y");
  m.def("forward_infer_resident", &forward_infer_resident,
        "selective scan forward for inference with the state-resident kernel (segment_len, lanes_per_row): y");
  m.def("uses_resident_kernel", &uses_resident_kernel,
        "whether the default inference launch takes the state-resident kernel for (rows, L, N)");
  m.def("resident_plan", &resident_plan,
        "(segment steps, segments, lanes a row) of the state-resident kernel's default plan");
  m.def("infer_configs", &infer_configs, "compiled inference configurations (items, warps, states) for (dtype, N)");
  m.def("default_infer_config", &default_infer_config,
        "the inference configuration the default picks for (rows, L, dtype, N)");
  m.def("backward", &backward, "selective scan backward: (du, ddelta, dA, dB, dC, dD, ddelta_bias)");
}
