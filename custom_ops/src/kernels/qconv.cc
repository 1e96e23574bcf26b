// PostConv, PotConv, UniformConv: 2-D convolution of uint8 activation codes with packed
// low-bit weights, exact integer accumulation, float32 epilogue. Reproduces reference.qconv bit
// for bit (docs/ops.md).
//
// Per (sample, group, block of output pixels): an im2col of (a - zero_point) into int16 rows of
// length K = (C/group)*kH*kW (zero-padded to a multiple of 16; padded input positions are 0),
// then int32 dot products against the decoded int16 weight rows, 4 output channels at a time.
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/ops.h"
#include "qexport/weights.h"

namespace qexport {
namespace {

constexpr int64_t kTaskMacs = int64_t{1} << 17;   // target multiply-adds per parallel task
constexpr int64_t kColsElems = int64_t{1} << 19;  // cap of one task's im2col buffer (int16s)

// floor((size + pb + pe - d*(k-1) - 1) / s) + 1, or 0 when that is <= 0.
int64_t conv_out(const char* op, int64_t size, int64_t k, int64_t s, int64_t pb, int64_t pe, int64_t d) {
  const int64_t span = checked_mul(op, d, k - 1, "dilated kernel");
  const int64_t num = size + pb + pe - span - 1;
  return num < 0 ? 0 : num / s + 1;
}

class ConvKernel {
 public:
  ConvKernel(const OrtKernelInfo* info, const char* op, WeightFormat fmt)
      : op_(op), node_(node_name(info)), state_(init(info, op, fmt)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] { compute(raw); });
  }

 private:
  // Reads and checks the attributes (before WeightedState decodes constant weights).
  WeightedState init(const OrtKernelInfo* info, const char* op, WeightFormat fmt) {
    WeightedAttrs a = read_weighted_attrs(info, op, fmt, 4);
    Attributes attrs(info, op);
    const std::vector<int64_t> strides = attrs.get_ints("strides", {1, 1});
    const std::vector<int64_t> pads = attrs.get_ints("pads", {0, 0, 0, 0});
    const std::vector<int64_t> dilations = attrs.get_ints("dilations", {1, 1});
    const int64_t group = attrs.get_int("group", 1);
    auto all_in = [](const std::vector<int64_t>& v, int64_t lo) {
      for (int64_t x : v)
        if (x < lo || x > INT32_MAX) return false;
      return true;
    };
    if (strides.size() != 2 || !all_in(strides, 1))
      invalid(op, "attribute 'strides'=", list_str(strides), " must be 2 values >= 1 [sH, sW]");
    if (pads.size() != 4 || !all_in(pads, 0))
      invalid(op, "attribute 'pads'=", list_str(pads), " must be 4 values >= 0 [top, left, bottom, right]");
    if (dilations.size() != 2 || !all_in(dilations, 1))
      invalid(op, "attribute 'dilations'=", list_str(dilations), " must be 2 values >= 1 [dH, dW]");
    if (group < 1) invalid(op, "attribute 'group'=", group, " must be >= 1");
    if (a.out_channels % group != 0)
      invalid(op, "attribute 'group'=", group, " does not divide out channels ", a.out_channels);
    sh_ = strides[0], sw_ = strides[1];
    pt_ = pads[0], pl_ = pads[1], pb_ = pads[2], pr_ = pads[3];
    dh_ = dilations[0], dw_ = dilations[1];
    group_ = group;
    cg_ = a.weight_shape[1], kh_ = a.weight_shape[2], kw_ = a.weight_shape[3];
    return WeightedState(info, op, std::move(a));
  }

  void compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const WeightedAttrs& a = state_.attrs();
    const Input x = get_input(op_, ctx, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (x.shape.size() != 4)
      invalid(op_, "input 'X' must be (N, C, H, W), got rank ", x.shape.size(), " shape ", shape_str(x.shape));
    const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
    if (c != group_ * cg_)
      invalid(op_, "input 'X' has ", c, " channels, expected group * weight_shape[1] = ", group_, " * ", cg_, " = ",
              group_ * cg_);
    const WeightedState::Scales sc = state_.scales(ctx, n);
    const uint8_t* xd = static_cast<const uint8_t*>(x.data);
    state_.check_codes(xd, x.count);
    const int64_t oh = conv_out(op_, h, kh_, sh_, pt_, pb_, dh_);
    const int64_t ow = conv_out(op_, w, kw_, sw_, pl_, pr_, dw_);
    if (oh < 1 || ow < 1)
      invalid(op_, "output would be empty (", oh, "x", ow, ") for input ", h, "x", w, " with kernel ", kh_, "x", kw_,
              ", strides [", sh_, ", ", sw_, "], pads [", pt_, ", ", pl_, ", ", pb_, ", ", pr_, "], dilations [", dh_,
              ", ", dw_, "]");
    std::vector<int16_t> w_scratch;
    const int16_t* wts = state_.weights(ctx, w_scratch);
    const int64_t o = a.out_channels;
    float* y = ctx.GetOutput(0, std::vector<int64_t>{n, o, oh, ow}).GetTensorMutableData<float>();
    if (n == 0) return;

    Geometry g;
    g.x = xd, g.y = y, g.w = wts, g.sc = sc;
    g.n = n, g.c = c, g.h = h, g.wd = w, g.oh = oh, g.ow = ow, g.o = o, g.og = o / group_;
    g.p = oh * ow;
    const int64_t macs_per_pixel = a.k_padded * g.og;
    int64_t block = (kTaskMacs + macs_per_pixel - 1) / macs_per_pixel;
    const int64_t cols_cap = kColsElems / a.k_padded;
    if (block > cols_cap) block = cols_cap;
    if (block < 1) block = 1;
    if (block > g.p) block = g.p;
    g.block = block;
    g.nblocks = (g.p + block - 1) / block;
    const size_t tasks = static_cast<size_t>(n * group_ * g.nblocks);
    if (a.int64_acc) {
      parallel_for(ctx, tasks, [&](size_t t) { run_task<int64_t>(g, static_cast<int64_t>(t)); });
    } else {
      parallel_for(ctx, tasks, [&](size_t t) { run_task<int32_t>(g, static_cast<int64_t>(t)); });
    }
  }

  struct Geometry {
    const uint8_t* x;
    float* y;
    const int16_t* w;
    WeightedState::Scales sc;
    int64_t n, c, h, wd, oh, ow, o, og, p, block, nblocks;
  };

  // Builds the im2col rows of output pixels [p0, p1) of sample `ni`, group `gi`.
  void im2col(const Geometry& g, int64_t ni, int64_t gi, int64_t p0, int64_t p1, int16_t* cols) const {
    const WeightedAttrs& a = state_.attrs();
    const int16_t zp = static_cast<int16_t>(a.act_zero_point);
    const size_t plane = static_cast<size_t>(g.h * g.wd);
    const uint8_t* xg = g.x + static_cast<size_t>(ni * g.c + gi * cg_) * plane;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t oy = p / g.ow, ox = p % g.ow;
      const int64_t iy0 = oy * sh_ - pt_, ix0 = ox * sw_ - pl_;
      // Kernel columns j with 0 <= ix0 + j*dw < W.
      int64_t jlo = 0, jhi = kw_;
      if (ix0 < 0) jlo = (-ix0 + dw_ - 1) / dw_;
      if (ix0 >= g.wd) {
        jhi = 0;
      } else {
        const int64_t last = (g.wd - 1 - ix0) / dw_ + 1;
        if (last < jhi) jhi = last;
      }
      if (jlo > jhi) jlo = jhi;
      int16_t* row = cols + (p - p0) * a.k_padded;
      for (int64_t ci = 0; ci < cg_; ++ci) {
        const uint8_t* xc = xg + static_cast<size_t>(ci) * plane;
        for (int64_t i = 0; i < kh_; ++i) {
          const int64_t iy = iy0 + i * dh_;
          if (iy < 0 || iy >= g.h || jlo >= jhi) {
            std::memset(row, 0, sizeof(int16_t) * static_cast<size_t>(kw_));
            row += kw_;
            continue;
          }
          const uint8_t* line = xc + iy * g.wd;  // read only at ix0 + j*dw, jlo <= j < jhi
          int64_t j = 0;
          for (; j < jlo; ++j) *row++ = 0;
          if (dw_ == 1) {
            const uint8_t* src = line + (ix0 + jlo);
            const int64_t len = jhi - jlo;
            for (int64_t q = 0; q < len; ++q) row[q] = static_cast<int16_t>(src[q] - zp);
            row += len;
            j = jhi;
          } else {
            for (; j < jhi; ++j) *row++ = static_cast<int16_t>(line[ix0 + j * dw_] - zp);
          }
          for (; j < kw_; ++j) *row++ = 0;
        }
      }
      std::memset(row, 0, sizeof(int16_t) * static_cast<size_t>(a.k_padded - a.k));
    }
  }

  template <typename Acc>
  void run_task(const Geometry& g, int64_t t) const {
    const WeightedAttrs& a = state_.attrs();
    const int64_t blk = t % g.nblocks, gi = (t / g.nblocks) % group_, ni = t / (g.nblocks * group_);
    const int64_t p0 = blk * g.block, p1 = p0 + g.block < g.p ? p0 + g.block : g.p;
    thread_local std::vector<int16_t> cols;
    const size_t need = static_cast<size_t>((p1 - p0) * a.k_padded);
    if (cols.size() < need) cols.resize(need);
    im2col(g, ni, gi, p0, p1, cols.data());

    const size_t kp = static_cast<size_t>(a.k_padded), chunk = static_cast<size_t>(a.chunk);
    const float xs = g.sc.x_scale[g.sc.x_scale_per_sample ? ni : 0];
    for (int64_t o0 = 0; o0 < g.og; o0 += 4) {
      const int64_t rows = g.og - o0 < 4 ? g.og - o0 : 4;
      const int64_t oc = gi * g.og + o0;  // first output channel of this row block
      const int16_t* wrow = g.w + static_cast<size_t>(oc) * kp;
      float m[4], b[4];
      float* out[4];
      for (int64_t r = 0; r < rows; ++r) {
        m[r] = xs * g.sc.w_scale[oc + r];
        b[r] = g.sc.bias[oc + r];
        out[r] = g.y + static_cast<size_t>((ni * g.o + oc + r) * g.p);
      }
      for (int64_t p = p0; p < p1; ++p) {
        Acc acc[4];
        dot_rows<Acc>(cols.data() + (p - p0) * kp, wrow, kp, static_cast<size_t>(rows), kp, chunk, acc);
        for (int64_t r = 0; r < rows; ++r) out[r][p] = epilogue(acc[r], m[r], b[r], a.relu);
      }
    }
  }

  const char* op_;
  std::string node_;
  int64_t sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0, dh_ = 1, dw_ = 1, group_ = 1;
  int64_t cg_ = 1, kh_ = 1, kw_ = 1;
  WeightedState state_;  // declared last: initialised by init(), which sets the fields above
};

using PostConvOp = WeightedOp<ConvKernel, WeightFormat::kPost>;
using PotConvOp = WeightedOp<ConvKernel, WeightFormat::kPot>;
using UniformConvOp = WeightedOp<ConvKernel, WeightFormat::kUniform>;

}  // namespace
}  // namespace qexport

QEXPORT_DEFINE_OP(PostConv, qexport::PostConvOp)
QEXPORT_DEFINE_OP(PotConv, qexport::PotConvOp)
QEXPORT_DEFINE_OP(UniformConv, qexport::UniformConvOp)
