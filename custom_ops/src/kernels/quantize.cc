// AsqQuantize and LsqQuantize: float32 activations -> uint8 codes + per-sample float32 scale.
// Reproduces reference.asq_quantize / reference.lsq_quantize bit for bit (docs/ops.md). The
// spatial means and the codes loop come from the kernel's path (simd.h): the means keep the
// defined sequential order per plane, the codes are the float32-division result.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/isa.h"
#include "qexport/ops.h"
#include "qexport/quantize.h"
#include "qexport/simd.h"

namespace qexport {

QuantParams read_quant_params(const OrtKernelInfo* info, const char* op, const std::string& prefix) {
  Attributes attrs(info, op);
  QuantParams q;
  const std::string nb = prefix + "bits", ns = prefix + "signed", nst = prefix + "step";
  const int64_t bits = attrs.get_int(nb.c_str());
  if (bits < 2 || bits > 8) invalid(op, "attribute '", nb, "'=", bits, " is out of range (2..8)");
  const int64_t is_signed = attrs.get_int(ns.c_str());
  if (is_signed != 0 && is_signed != 1) invalid(op, "attribute '", ns, "'=", is_signed, " must be 0 or 1");
  const float step = attrs.get_float(nst.c_str());
  if (!std::isfinite(step) || !(step > 0.0f)) invalid(op, "attribute '", nst, "'=", step, " must be finite and > 0");
  q.bits = static_cast<int>(bits);
  q.is_signed = is_signed == 1;
  q.step = step;
  q.zero_point = q.is_signed ? (1 << (q.bits - 1)) : 0;
  q.lo = q.is_signed ? -static_cast<float>(1 << (q.bits - 1)) : 0.0f;
  q.hi = q.is_signed ? static_cast<float>((1 << (q.bits - 1)) - 1) : static_cast<float>((1 << q.bits) - 1);
  const std::string nm = prefix + "beta_map", ng = prefix + "groups";
  const std::string map = attrs.get_string(nm.c_str(), "sigmoid2");
  if (map != "relu" && map != "sigmoid2") invalid(op, "attribute '", nm, "'='", map, "' must be relu or sigmoid2");
  q.beta_relu = map == "relu";
  q.groups = attrs.get_int(ng.c_str(), 0);
  if (q.groups < 0) invalid(op, "attribute '", ng, "'=", q.groups, " must be >= 0");
  return q;
}

void check_adapters(const char* op, const char* const names[4], const std::vector<int64_t>& w1,
                    const std::vector<int64_t>& b1, const std::vector<int64_t>& w2, const std::vector<int64_t>& b2,
                    int64_t c, int64_t groups, const char* groups_name) {
  if (c >= 0 && groups > c)
    invalid(op, "attribute '", groups_name, "'=", groups, " exceeds the ", c, " channels of the quantized tensor");
  if (groups > 0) {  // W1 is (H, G)
    if (w1.size() != 2 || w1[1] != groups)
      invalid(op, "input '", names[0], "' must be (H, G) = (H, ", groups, ") (attribute '", groups_name, "'=", groups,
              "), got ", shape_str(w1));
  } else if (w1.size() != 2 || (c >= 0 && w1[1] != c)) {  // one group per channel: W1 is (H, C)
    if (c >= 0) invalid(op, "input '", names[0], "' must be (H, C) = (H, ", c, "), got ", shape_str(w1));
    invalid(op, "input '", names[0], "' must be (H, C), got ", shape_str(w1));
  }
  const int64_t h = w1[0];
  if (b1 != std::vector<int64_t>{h}) invalid(op, "input '", names[1], "' must be (", h, ",), got ", shape_str(b1));
  if (w2 != std::vector<int64_t>{1, h}) invalid(op, "input '", names[2], "' must be (1, ", h, "), got ", shape_str(w2));
  if (b2 != std::vector<int64_t>{1}) invalid(op, "input '", names[3], "' must be (1,), got ", shape_str(b2));
}

float asq_scale(const double* p, int64_t c, const float* w1, const float* b1, const float* w2, float b2, int64_t h,
                const QuantParams& q) {
  // 2. The adapter's inputs: the mean of each channel group [floor(g C / G), floor((g+1) C / G)).
  const int64_t g = q.groups > 0 ? q.groups : c;
  const double* in = p;
  thread_local std::vector<double> grouped;
  if (g != c) {
    grouped.resize(static_cast<size_t>(g));
    // The bounds stepped without a division per group: hi = floor((gi+1) C / G) and
    // hr = (gi+1) C mod G, each step adding C = cq G + cr.
    const int64_t cq = c / g, cr = c % g;
    int64_t hi = 0, hr = 0;
    for (int64_t gi = 0; gi < g; ++gi) {
      const int64_t lo = hi;
      hi += cq, hr += cr;
      if (hr >= g) hi += 1, hr -= g;
      double acc = 0.0;
      for (int64_t ci = lo; ci < hi; ++ci) acc += p[ci];
      grouped[static_cast<size_t>(gi)] = acc / static_cast<double>(hi - lo);
    }
    in = grouped.data();
  }
  // 3. h[j] = relu(sum_g W1[j, g] * in[g] + B1[j]); 4. z = sum_j W2[0, j] * h[j] + B2[0], z in
  // the order of j after each block of kRows hidden units. The kRows sums of a block run side by
  // side, each still one sequential sum over g: one unit at a time was a chain of G dependent
  // float64 additions per unit (64 x 16 at the widest adapter), 3.5% of MobileNetV2's time.
  constexpr int64_t kRows = 8;
  double z = 0.0;
  for (int64_t j0 = 0; j0 < h; j0 += kRows) {
    double acc[kRows] = {};
    const float* rows = w1 + j0 * g;
    if (h - j0 >= kRows) {  // a whole block: a constant row count the compiler unrolls
      for (int64_t gi = 0; gi < g; ++gi)
        for (int64_t r = 0; r < kRows; ++r) acc[r] += static_cast<double>(rows[r * g + gi]) * in[gi];
    } else {
      for (int64_t gi = 0; gi < g; ++gi)
        for (int64_t r = 0; r < h - j0; ++r) acc[r] += static_cast<double>(rows[r * g + gi]) * in[gi];
    }
    for (int64_t r = 0; r < kRows && j0 + r < h; ++r) {
      const double a = acc[r] + static_cast<double>(b1[j0 + r]);
      const double hj = a > 0.0 ? a : 0.0;
      z += static_cast<double>(w2[j0 + r]) * hj;
    }
  }
  z = z + static_cast<double>(b2);
  // 5. beta; 6. scale = float32(step * beta).
  const double beta = q.beta_relu ? (z > 1e-8 ? z : 1e-8) : 2.0 / (1.0 + std::exp(-z));
  return static_cast<float>(static_cast<double>(q.step) * beta);
}

namespace {

constexpr const char* kAdapterNames[4] = {"W1", "B1", "W2", "B2"};

constexpr size_t kQuantizeChunk = size_t{1} << 16;  // elements per parallel task

// ------------------------------------------------------------------------------ LsqQuantize
struct LsqKernel {
  LsqKernel(const OrtKernelInfo* info, const char* op)
      : op_(op), node_(node_name(info)), q_(read_quant_params(info, op)), simd_(simd_kernels(select_isa(op))),
        trace_(op, node_) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] { compute(raw); });
  }

 private:
  void compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const Input x = get_input(op_, ctx, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (x.shape.empty()) invalid(op_, "input 'X' must have rank >= 1 (N, ...), got a scalar");
    const int64_t n = x.shape[0];
    uint8_t* y = ctx.GetOutput(0, x.shape).GetTensorMutableData<uint8_t>();
    float* scale = ctx.GetOutput(1, std::vector<int64_t>{n}).GetTensorMutableData<float>();
    for (int64_t i = 0; i < n; ++i) scale[i] = q_.step;
    const float* xd = static_cast<const float*>(x.data);
    const size_t count = x.count;
    const size_t tasks = (count + kQuantizeChunk - 1) / kQuantizeChunk;
    trace_part(trace_, *simd_, vector_path(*simd_));
    parallel_for(ctx, tasks, [&](size_t t) {
      const size_t begin = t * kQuantizeChunk;
      const size_t len = count - begin < kQuantizeChunk ? count - begin : kQuantizeChunk;
      simd_->quantize(xd + begin, y + begin, len, q_.step, q_);
    });
  }

  const char* op_;
  std::string node_;
  QuantParams q_;
  const SimdKernels* simd_;
  PathTrace trace_;  // QEXPORT_KERNEL_TRACE: the path each Compute ran
};

// ------------------------------------------------------------------------------ AsqQuantize
struct AsqKernel {
  AsqKernel(const OrtKernelInfo* info, const char* op)
      : op_(op), node_(node_name(info)), q_(read_quant_params(info, op)), simd_(simd_kernels(select_isa(op))),
        trace_(op, node_) {
    ConstantInput in[4];
    for (size_t i = 0; i < 4; ++i) in[i] = constant_input(info, 1 + i);
    if (in[0].is_constant && in[1].is_constant && in[2].is_constant && in[3].is_constant)
      check_adapters(op_, kAdapterNames, in[0].shape, in[1].shape, in[2].shape, in[3].shape, -1, q_.groups,
                     "groups");
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] { compute(raw); });
  }

 private:
  void compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const Input x = get_input(op_, ctx, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (x.shape.size() < 2) invalid(op_, "input 'X' must have rank >= 2 (N, C, ...), got rank ", x.shape.size());
    const int64_t n = x.shape[0], c = x.shape[1];
    int64_t s = 1;
    for (size_t i = 2; i < x.shape.size(); ++i) s = checked_mul(op_, s, x.shape[i], "input 'X'");
    if (s < 1) invalid(op_, "input 'X' has an empty spatial extent, shape ", shape_str(x.shape));
    if (c < 1) invalid(op_, "input 'X' has no channels, shape ", shape_str(x.shape));
    const Input w1 = get_input(op_, ctx, 1, "W1", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    const Input b1 = get_input(op_, ctx, 2, "B1", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    const Input w2 = get_input(op_, ctx, 3, "W2", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    const Input b2 = get_input(op_, ctx, 4, "B2", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    check_adapters(op_, kAdapterNames, w1.shape, b1.shape, w2.shape, b2.shape, c, q_.groups, "groups");
    const int64_t h = w1.shape[0];

    uint8_t* y = ctx.GetOutput(0, x.shape).GetTensorMutableData<uint8_t>();
    float* scale = ctx.GetOutput(1, std::vector<int64_t>{n}).GetTensorMutableData<float>();
    const float* xd = static_cast<const float*>(x.data);
    const float* w1d = static_cast<const float*>(w1.data);
    const float* b1d = static_cast<const float*>(b1.data);
    const float* w2d = static_cast<const float*>(w2.data);
    const float b2v = static_cast<const float*>(b2.data)[0];
    const size_t plane = static_cast<size_t>(s), sample = static_cast<size_t>(c) * plane;
    trace_part(trace_, *simd_, vector_path(*simd_));

    parallel_for(ctx, static_cast<size_t>(n), [&](size_t ni) {
      const float* xn = xd + ni * sample;
      // 1. p[c]: sequential float64 sum over the spatial positions, divided by S.
      thread_local std::vector<double> p;
      p.resize(static_cast<size_t>(c));
      simd_->plane_means(xn, static_cast<size_t>(c), plane, p.data());
      // 2.-6.
      const float sc = asq_scale(p.data(), c, w1d, b1d, w2d, b2v, h, q_);
      scale[ni] = sc;
      // 7. codes, float32 division.
      simd_->quantize(xn, y + ni * sample, sample, sc, q_);
    });
  }

  const char* op_;
  std::string node_;
  QuantParams q_;
  const SimdKernels* simd_;
  PathTrace trace_;  // QEXPORT_KERNEL_TRACE: the path each Compute ran
};

// ------------------------------------------------------------------------------ op objects
template <typename Kernel, size_t NumInputs>
struct QuantizeOp : Ort::CustomOpBase<QuantizeOp<Kernel, NumInputs>, Kernel, /*WithStatus=*/true> {
  explicit QuantizeOp(const char* name) : name_(name) {}

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    return guarded(name_, node_name(info), [&] { *kernel = new Kernel(info, name_); });
  }

  const char* GetName() const { return name_; }
  size_t GetInputTypeCount() const { return NumInputs; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }

 private:
  const char* name_;
};

using AsqQuantizeOp = QuantizeOp<AsqKernel, 5>;
using LsqQuantizeOp = QuantizeOp<LsqKernel, 1>;

}  // namespace
}  // namespace qexport

QEXPORT_DEFINE_OP(AsqQuantize, qexport::AsqQuantizeOp)
QEXPORT_DEFINE_OP(LsqQuantize, qexport::LsqQuantizeOp)
