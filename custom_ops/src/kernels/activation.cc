// Sigmoid and Silu: float32 -> float32 elementwise, with the float64 computation that
// reference.exp64 / reference.sigmoid / reference.silu define (docs/ops.md): every step is one
// IEEE double operation (the build has -ffp-contract=off), so the bits equal numpy's.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/float_op.h"
#include "qexport/isa.h"
#include "qexport/ops.h"

namespace qexport {
namespace {

constexpr double kExpClamp = 110.0;
constexpr double kLn2Hi = 0.693147180369123816490;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700;
constexpr int kExpTerms = 14;

struct ExpCoefficients {
  double c[kExpTerms];
  ExpCoefficients() {  // 1/n!, each the quotient of the previous one by n (as the reference)
    double v = 1.0;
    c[0] = 1.0;
    for (int n = 1; n < kExpTerms; ++n) {
      v = v / static_cast<double>(n);
      c[n] = v;
    }
  }
};

const ExpCoefficients& coefficients() {
  static const ExpCoefficients table;
  return table;
}

// exp(t) for t clamped to [-110, 110]: k = rint(t / ln2), r = (t - k ln2_hi) - k ln2_lo,
// Horner from the highest term, ldexp(p, k). NaN stays NaN.
inline double exp64(double t, const double* c) {
  if (std::isnan(t)) return t;
  t = t < -kExpClamp ? -kExpClamp : (t > kExpClamp ? kExpClamp : t);
  const double k = std::nearbyint(t * kInvLn2);
  const double r = (t - k * kLn2Hi) - k * kLn2Lo;
  double p = c[kExpTerms - 1];
  for (int n = kExpTerms - 2; n >= 0; --n) p = p * r + c[n];
  return std::ldexp(p, static_cast<int>(k));
}

enum class Kind { kSigmoid, kSilu };

struct ActivationKernel {
  // The path is selected like every kernel's (QEXPORT_KERNEL_ISA is checked), but every path runs
  // the one portable loop: the trace says path=scalar (reason not_in_path on the others).
  ActivationKernel(const OrtKernelInfo* info, const char* op, Kind kind)
      : op_(op), node_(node_name(info)), kind_(kind), selected_(select_isa(op)), trace_(op, node_) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] {
      Ort::KernelContext ctx(raw);
      const Input in = get_input(op_, ctx, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      run(ctx, static_cast<const float*>(in.data), in.count,
          ctx.GetOutput(0, in.shape).GetTensorMutableData<float>());
    });
  }

 private:
  // y[i] = float32(v / (1 + exp64(-v))) (Silu) or float32(1 / (1 + exp64(-v))) (Sigmoid), v = x[i].
  void run(Ort::KernelContext& ctx, const float* xd, size_t count, float* y) {
    const double* c = coefficients().c;
    const bool silu = kind_ == Kind::kSilu;
    trace_.ran(selected_, Isa::kScalar, selected_ == Isa::kScalar ? nullptr : kNotInPath);
    constexpr size_t kChunk = 16384;
    parallel_for(ctx, (count + kChunk - 1) / kChunk, [&](size_t part) {
      const size_t end = (part + 1) * kChunk < count ? (part + 1) * kChunk : count;
      for (size_t i = part * kChunk; i < end; ++i) {
        const double v = static_cast<double>(xd[i]);
        const double d = 1.0 + exp64(-v, c);
        y[i] = static_cast<float>(silu ? v / d : 1.0 / d);
      }
    });
  }

  const char* op_;
  std::string node_;
  Kind kind_;
  Isa selected_;
  PathTrace trace_;  // QEXPORT_KERNEL_TRACE: the path each Compute ran
};

template <Kind K>
struct ActivationOp : FloatOp<ActivationOp<K>, ActivationKernel> {
  explicit ActivationOp(const char* name) : FloatOp<ActivationOp<K>, ActivationKernel>(name) {}
  ActivationKernel* make(const OrtKernelInfo* info) const { return new ActivationKernel(info, this->name_, K); }
};

using SigmoidOp = ActivationOp<Kind::kSigmoid>;
using SiluOp = ActivationOp<Kind::kSilu>;

}  // namespace
}  // namespace qexport

QEXPORT_DEFINE_OP(Sigmoid, qexport::SigmoidOp)
QEXPORT_DEFINE_OP(Silu, qexport::SiluOp)
