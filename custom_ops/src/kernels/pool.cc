// GlobalAvgPool: float32 (N, C, ...) -> float32 (N, C, 1, ..., 1), each value the float64
// sequential mean of its plane rounded once to float32 (reference.global_avg_pool, docs/ops.md).
#include <cstdint>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/float_op.h"
#include "qexport/isa.h"
#include "qexport/ops.h"
#include "qexport/simd.h"

namespace qexport {
namespace {

struct PoolKernel {
  PoolKernel(const OrtKernelInfo* info, const char* op)
      : op_(op), node_(node_name(info)), simd_(simd_kernels(select_isa(op))), trace_(op, node_) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] { compute(raw); });
  }

 private:
  void compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const Input x = get_input(op_, ctx, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (x.shape.size() < 3) invalid(op_, "input 'X' must have rank >= 3 (N, C, ...), got rank ", x.shape.size());
    int64_t s = 1;
    for (size_t i = 2; i < x.shape.size(); ++i) s = checked_mul(op_, s, x.shape[i], "input 'X'");
    if (s < 1) invalid(op_, "input 'X' has an empty spatial extent, shape ", shape_str(x.shape));
    std::vector<int64_t> out_shape(x.shape.size(), 1);
    out_shape[0] = x.shape[0];
    out_shape[1] = x.shape[1];
    float* y = ctx.GetOutput(0, out_shape).GetTensorMutableData<float>();
    const float* xd = static_cast<const float*>(x.data);
    const size_t c = static_cast<size_t>(x.shape[1]), plane = static_cast<size_t>(s);
    trace_part(trace_, *simd_, vector_path(*simd_));
    parallel_for(ctx, static_cast<size_t>(x.shape[0]), [&](size_t ni) {
      thread_local std::vector<double> means;
      means.resize(c);
      simd_->plane_means(xd + ni * c * plane, c, plane, means.data());
      for (size_t ci = 0; ci < c; ++ci) y[ni * c + ci] = static_cast<float>(means[ci]);
    });
  }

  const char* op_;
  std::string node_;
  const SimdKernels* simd_;
  PathTrace trace_;  // QEXPORT_KERNEL_TRACE: the path each Compute ran
};

struct GlobalAvgPoolOp : FloatOp<GlobalAvgPoolOp, PoolKernel> {
  using FloatOp::FloatOp;
  PoolKernel* make(const OrtKernelInfo* info) const { return new PoolKernel(info, name_); }
};

}  // namespace
}  // namespace qexport

QEXPORT_DEFINE_OP(GlobalAvgPool, qexport::GlobalAvgPoolOp)
