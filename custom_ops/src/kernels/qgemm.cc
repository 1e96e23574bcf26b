// QGemm (and the version-1 PostGemm, PotGemm, UniformGemm): Y = (X - zero_point) W^T with X (N, K) uint8 codes and W (O, K)
// packed low-bit weights, exact integer accumulation, float32 epilogue. Reproduces
// reference.qgemm bit for bit (docs/ops.md).
#include <cstring>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/isa.h"
#include "qexport/ops.h"
#include "qexport/simd.h"
#include "qexport/weights.h"

namespace qexport {
namespace {

constexpr int64_t kRowBlock = 16;               // samples per parallel task
constexpr int64_t kTaskMacs = int64_t{1} << 18;  // target multiply-adds per parallel task

class GemmKernel {
 public:
  GemmKernel(const OrtKernelInfo* info, const char* op)
      : op_(op), node_(node_name(info)), state_(info, op, read_weighted_attrs(info, op, 2)), trace_(op, node_) {
    const WeightedAttrs& a = state_.attrs();
    simd_ = simd_kernels(select_isa(op));
    fast_ = simd_->gemm != nullptr && !a.int64_acc;
    if (!fast_) return;
    act_offset_ = act_offset_for(*simd_, a.act_bits);
    safe16_ = 2 * ((int64_t{1} << a.act_bits) - 1) * a.wmax <= 32767;
    if (state_.weights_constant())
      pack_gemm_weights(a, state_.weights_at_creation(), simd_->gemm_block, act_offset_, &packed_);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] { compute(raw); });
  }

 private:
  void compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const WeightedAttrs& a = state_.attrs();
    const Input x = get_input(op_, ctx, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (x.shape.size() != 2)
      invalid(op_, "input 'X' must be (N, K), got rank ", x.shape.size(), " shape ", shape_str(x.shape));
    const int64_t n = x.shape[0];
    if (x.shape[1] != a.k)
      invalid(op_, "input 'X' has ", x.shape[1], " features, expected K = weight_shape[1] = ", a.k);
    const WeightedState::Scales sc = state_.scales(ctx, n);
    const uint8_t* xd = static_cast<const uint8_t*>(x.data);
    state_.check_codes(xd, x.count, simd_);
    std::vector<int16_t> w_scratch;
    const int16_t* wts = state_.weights(ctx, w_scratch);
    const int64_t o = a.out_channels;
    float* y = ctx.GetOutput(0, std::vector<int64_t>{n, o}).GetTensorMutableData<float>();
    if (n == 0) return;
    if (fast_) {
      trace_part(trace_, *simd_, gemm_path(*simd_));
      compute_fast(ctx, xd, sc, wts, y, n);
      return;
    }
    // The portable path: the selected one (scalar), or a path without a gemm (neon), or int64
    // accumulators, which every path runs here, saying so (QEXPORT_KERNEL_TRACE).
    if (simd_->isa == Isa::kScalar) {
      trace_.ran(Isa::kScalar, Isa::kScalar);
    } else {
      trace_.ran(simd_->isa, Isa::kScalar, simd_->gemm == nullptr ? kNotInPath : kInt64Acc);
    }

    const int64_t rows = n < kRowBlock ? n : kRowBlock;
    int64_t ob = (kTaskMacs + a.k_padded * rows - 1) / (a.k_padded * rows);
    ob = (ob + 3) / 4 * 4;
    if (ob > o) ob = o;
    const int64_t nrb = (n + kRowBlock - 1) / kRowBlock, nob = (o + ob - 1) / ob;
    Task t{xd, y, wts, sc, n, o, ob, nob};
    const size_t tasks = static_cast<size_t>(nrb * nob);
    if (a.int64_acc) {
      parallel_for(ctx, tasks, [&](size_t i) { run_task<int64_t>(t, static_cast<int64_t>(i)); });
    } else {
      parallel_for(ctx, tasks, [&](size_t i) { run_task<int32_t>(t, static_cast<int64_t>(i)); });
    }
  }

  // The SIMD path: tasks of kRowBlock samples x a range of output-channel blocks.
  void compute_fast(Ort::KernelContext& ctx, const uint8_t* x, const WeightedState::Scales& sc, const int16_t* wts,
                    float* y, int64_t n) const {
    const WeightedAttrs& a = state_.attrs();
    PackedWeights local;
    const PackedWeights* pw = &packed_;
    if (!state_.weights_constant()) {
      pack_gemm_weights(a, wts, simd_->gemm_block, act_offset_, &local);
      pw = &local;
    }
    const int64_t gb = simd_->gemm_block, o = a.out_channels;
    const int64_t kp = (a.k + 3) / 4 * 4, nob = (o + gb - 1) / gb;
    const int64_t rows = n < kRowBlock ? n : kRowBlock;
    int64_t bpt = (kTaskMacs + kp * rows * gb - 1) / (kp * rows * gb);  // blocks per task
    if (bpt > nob) bpt = nob;
    const int64_t nrb = (n + kRowBlock - 1) / kRowBlock, nbt = (nob + bpt - 1) / bpt;
    GemmTask proto;
    proto.x = x, proto.k = a.k, proto.kp = kp, proto.o = o;
    proto.act_offset = act_offset_;
    proto.w = pw->w.data(), proto.init = pw->init.data();
    proto.x_scale = sc.x_scale, proto.x_scale_per_sample = sc.x_scale_per_sample;
    proto.w_scale = sc.w_scale, proto.bias = sc.bias;
    proto.relu = a.relu, proto.safe16 = safe16_;
    proto.y = y;
    parallel_for(ctx, static_cast<size_t>(nrb * nbt), [&](size_t i) {
      const int64_t t = static_cast<int64_t>(i);
      GemmTask task = proto;
      task.n0 = (t / nbt) * kRowBlock;
      task.n1 = task.n0 + kRowBlock < n ? task.n0 + kRowBlock : n;
      task.b0 = (t % nbt) * bpt;
      task.b1 = task.b0 + bpt < nob ? task.b0 + bpt : nob;
      thread_local Scratch<uint8_t> buf;
      task.buf = buf.get(static_cast<size_t>((task.n1 - task.n0) * kp));
      simd_->gemm(task);
    });
  }

  struct Task {
    const uint8_t* x;
    float* y;
    const int16_t* w;
    WeightedState::Scales sc;
    int64_t n, o, ob, nob;
  };

  template <typename Acc>
  void run_task(const Task& t, int64_t i) const {
    const WeightedAttrs& a = state_.attrs();
    const int64_t n0 = (i / t.nob) * kRowBlock, n1 = n0 + kRowBlock < t.n ? n0 + kRowBlock : t.n;
    const int64_t ob0 = (i % t.nob) * t.ob, ob1 = ob0 + t.ob < t.o ? ob0 + t.ob : t.o;
    const size_t kp = static_cast<size_t>(a.k_padded), k = static_cast<size_t>(a.k);
    const size_t chunk = static_cast<size_t>(a.chunk);
    thread_local std::vector<int16_t> buf;
    const size_t need = static_cast<size_t>(n1 - n0) * kp;
    if (buf.size() < need) buf.resize(need);
    const int16_t zp = static_cast<int16_t>(a.act_zero_point);
    for (int64_t r = n0; r < n1; ++r) {
      const uint8_t* src = t.x + static_cast<size_t>(r) * k;
      int16_t* dst = buf.data() + static_cast<size_t>(r - n0) * kp;
      for (size_t j = 0; j < k; ++j) dst[j] = static_cast<int16_t>(src[j] - zp);
      std::memset(dst + k, 0, sizeof(int16_t) * (kp - k));
    }
    for (int64_t o0 = ob0; o0 < ob1; o0 += 4) {
      const size_t rows = static_cast<size_t>(ob1 - o0 < 4 ? ob1 - o0 : 4);
      const int16_t* wrow = t.w + static_cast<size_t>(o0) * kp;
      for (int64_t r = n0; r < n1; ++r) {
        const float xs = t.sc.x_scale[t.sc.x_scale_per_sample ? r : 0];
        Acc acc[4];
        dot_rows<Acc>(buf.data() + static_cast<size_t>(r - n0) * kp, wrow, kp, rows, kp, chunk, acc);
        float* out = t.y + static_cast<size_t>(r * t.o + o0);
        for (size_t q = 0; q < rows; ++q)
          out[q] = epilogue(acc[q], xs * t.sc.w_scale[o0 + q], t.sc.bias[o0 + q], a.relu);
      }
    }
  }

  const char* op_;
  std::string node_;
  WeightedState state_;
  const SimdKernels* simd_ = nullptr;
  bool fast_ = false;  // the SIMD path (else the portable one)
  uint8_t act_offset_ = 0;
  bool safe16_ = false;
  PackedWeights packed_;  // constant weights, packed for the SIMD path
  PathTrace trace_;       // QEXPORT_KERNEL_TRACE: the path each Compute ran
};

using GemmOp = WeightedOp<GemmKernel>;

}  // namespace
}  // namespace qexport

QEXPORT_DEFINE_OP(QGemm, qexport::GemmOp)
// Version 1 (format in the op name; docs/ops.md "Versions"): the same kernel.
QEXPORT_DEFINE_OP(PostGemm, qexport::GemmOp)
QEXPORT_DEFINE_OP(PotGemm, qexport::GemmOp)
QEXPORT_DEFINE_OP(UniformGemm, qexport::GemmOp)
