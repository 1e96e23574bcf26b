// QConv (and the version-1 PostConv, PotConv, UniformConv): 2-D convolution of uint8 activation codes with packed
// low-bit weights, exact integer accumulation, float32 epilogue. Reproduces reference.qconv bit
// for bit (docs/ops.md).
//
// PostConvFused, PotConvFused, UniformConvFused: the same conv followed by an optional residual
// Add, the ReLU and an optional activation quantizer of the result (reference.qconv_fused): the
// float output stays in cache (or is never written when no other node reads it) and the
// quantizer runs on it right away.
//
// Two implementations, chosen when the kernel is created (include/qexport/isa.h):
// * the SIMD paths (simd.h, src/kernels/simd_*.cc): weights re-packed once at kernel creation
//   into blocks of 8 output channels x 4 input channels per tap (int8); the codes of a sample are
//   re-laid out into stride-phase planes of 4-channel cells padded with the zero point, and each
//   vector of consecutive output positions is a direct convolution (no im2col) with u8 x s8 dot
//   products (vpdpbusd, sdot, ...);
// * the portable path ("scalar", and every op whose overflow bound needs int64 accumulators):
//   per (sample, group, block of output pixels), an im2col of (a - zero_point) into int16 rows
//   of length K = (C/group)*kH*kW (zero-padded to a multiple of 16; padded input positions are
//   0), then int32 dot products against the decoded int16 weight rows, 4 output channels at a
//   time.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/isa.h"
#include "qexport/ops.h"
#include "qexport/quantize.h"
#include "qexport/simd.h"
#include "qexport/weights.h"

namespace qexport {
namespace {

constexpr int64_t kTaskMacs = int64_t{1} << 17;   // target multiply-adds per parallel task
constexpr int64_t kColsElems = int64_t{1} << 19;  // cap of one task's im2col buffer (int16s)
constexpr int64_t kFastTaskMacs = int64_t{1} << 17;  // SIMD path, single image: multiply-adds per task
// The single-image split thresholds below were measured on a Xeon (AMX, AVX-512 VNNI); each is
// divided by 2^SimdKernels::parallel_shift, the path's (simd.h: 3 on avx2 and avx512vnni, measured
// on Zen 3 and Zen 4 EPYCs).
//
// SIMD path, single image: convs below this many multiply-adds (times SimdKernels::conv_speed)
// are not split over threads.
constexpr int64_t kParallelMinMacs = int64_t{1} << 22;
// ... unless its output has at least this many values: then the epilogue (float output, ReLU,
// residual) is the larger cost, and it splits well (MobileNetV2's pointwise convs: 1x1, few
// multiply-adds per output).
constexpr int64_t kParallelMinOutputs = int64_t{1} << 15;
// A single image's quantizer (means and codes) is split over threads from this many values on,
// in tasks of kQuantizeTask values. (2^15 measured on 2 cores: MobileNetV2@224 at batch 1 with 2
// threads 4.9 ms against 5.4 ms at 2^16; 2^14 split ResNet-20's 16x32x32 outputs and made it
// 1.2x slower than 1 thread.)
constexpr int64_t kParallelQuantize = int64_t{1} << 15;
constexpr int64_t kQuantizeTask = int64_t{1} << 15;
// An ASQ conv with at least this many channel blocks and outputs per sample: the conv by whole
// blocks, the means of each right after it (ConvKernel::conv_blocks_with_means).
constexpr int64_t kBlockwiseMinBlocks = 4;
constexpr int64_t kBlockwiseMinOutputs = int64_t{1} << 18;
// A single image's ASQ conv split by channel blocks on a plane of at most this many vector groups:
// each task computes every vector of its blocks, then their plane means (ConvKernel::compute_fast).
constexpr int64_t kTaskMeansPairs = 4;
// A single image's re-layout buffer of at least 2 * kRelayoutBandCells cells (4 bytes each) is
// filled by parallel bands of rows of about this many cells when its conv is split by channel blocks.
constexpr int64_t kRelayoutBandCells = int64_t{1} << 13;
// The depthwise path, single image: output channels are split into tasks of at least
// kDepthwiseTaskMacs multiply-adds when the conv has kDepthwiseParallelMinMacs or more.
constexpr int64_t kDepthwiseTaskMacs = int64_t{1} << 16;
constexpr int64_t kDepthwiseParallelMinMacs = int64_t{1} << 19;

// `units` units of work in about `want` tasks: the number of tasks rounded up to an even one
// (at most `units`) and the units spread evenly over them. ONNX Runtime hands equal tasks to its
// threads in turn, so on 2 threads 3 tasks take as long as 4 and 5 as long as 6 (measured:
// MobileNetV2 CIFAR's 8x8 depthwise convs, 384 channels in 3 tasks of 128, and its 32x32
// quantizers in 3 and 5 tasks).
struct Split {
  int64_t tasks, per_task;
};
Split even_split(int64_t units, int64_t want) {
  int64_t t = want < 1 ? 1 : want;
  if (t > 1) t += t % 2;
  if (t > units) t = units;
  if (t < 1) t = 1;
  const int64_t per = (units + t - 1) / t;
  return {(units + per - 1) / per, per};
}

// floor((size + pb + pe - d*(k-1) - 1) / s) + 1, or 0 when that is <= 0.
int64_t conv_out(const char* op, int64_t size, int64_t k, int64_t s, int64_t pb, int64_t pe, int64_t d) {
  const int64_t span = checked_mul(op, d, k - 1, "dilated kernel");
  const int64_t num = size + pb + pe - span - 1;
  return num < 0 ? 0 : num / s + 1;
}

// The vectors of `lanes` consecutive flat positions covering the output plane (see
// ConvGeometry) and where their lanes go: flat mode uses positions 0, lanes, 2 lanes, ... (a
// vector may span rows; the ws - ow extra columns of a row are dropped), row mode starts each
// row at x = 0, lanes, ...
void build_vectors(const ConvGeometry& g, int64_t lanes, std::vector<int32_t>* vstart, std::vector<int32_t>* vseg,
                   std::vector<ConvSegment>* segs) {
  vstart->resize(static_cast<size_t>(g.vectors));
  vseg->resize(static_cast<size_t>(g.vectors + 1));
  segs->clear();
  const int64_t per_row = (g.ow + lanes - 1) / lanes;
  for (int64_t v = 0; v < g.vectors; ++v) {
    const int64_t q = g.row_mode ? (v / per_row) * g.ws + (v % per_row) * lanes : v * lanes;
    (*vstart)[static_cast<size_t>(v)] = static_cast<int32_t>(q);
    (*vseg)[static_cast<size_t>(v)] = static_cast<int32_t>(segs->size());
    int64_t r = q / g.ws, x = q % g.ws, lane = 0;
    while (lane < lanes && r < g.oh) {
      if (x < g.ow) {
        const int64_t n = g.ow - x < lanes - lane ? g.ow - x : lanes - lane;
        ConvSegment* last = segs->size() > static_cast<size_t>((*vseg)[static_cast<size_t>(v)]) ? &segs->back() : nullptr;
        if (last != nullptr && last->lane + last->n == lane && last->out + last->n == r * g.ow + x) {
          last->n += static_cast<int32_t>(n);  // continues the previous segment (ws == ow: a 1x1 conv's rows)
        } else {
          segs->push_back(ConvSegment{static_cast<int32_t>(lane), static_cast<int32_t>(n), r * g.ow + x});
        }
      }
      lane += g.ws - x;
      ++r;
      x = 0;
    }
  }
  (*vseg)[static_cast<size_t>(g.vectors)] = static_cast<int32_t>(segs->size());
}

// Per-thread float scratch, one buffer per tag, shared by every conv kernel and path (a thread
// runs one kernel at a time): kOutputScratch, the float output of one sample when the node does
// not use Y; kDepthwiseScratch, the depthwise kernel's planes and accumulators. (Whether they stay
// in cache between nodes matters: a MobileNetV2 depthwise node took 110 us with its buffers in
// cache and 196 us after 32 MB of other traffic; sharing them did not change the model's time
// measurably, 1.87-1.97 ms before and 1.89-1.95 ms after.)
enum ScratchTag { kOutputScratch, kDepthwiseScratch };

template <ScratchTag Tag>
float* thread_scratch(size_t count) {
  thread_local Scratch<float> scratch;
  return scratch.get(count);
}

class ConvKernel {
 public:
  ConvKernel(const OrtKernelInfo* info, const char* op, bool fused)
      : op_(op), node_(node_name(info)), fused_(fused), state_(init(info, op)), trace_(op, node_) {
    const WeightedAttrs& a = state_.attrs();
    if (fused_) init_fused(info);
    simd_ = simd_kernels(select_isa(op));
    // Depthwise (one input channel per group) in float32, exact while every partial sum stays
    // below 2^24 in magnitude (simd.h, DepthwiseTask).
    depthwise_ = cg_ == 1 && group_ > 1 && sw_ <= 16 && simd_->depthwise != nullptr && !a.int64_acc &&
                 static_cast<double>(a.k) * 255.0 * static_cast<double>(a.wmax) < 16777216.0;
    if (depthwise_ && state_.weights_constant()) depthwise_weights(state_.weights_at_creation(), &dw_weights_);
    fast_ = simd_->conv != nullptr && !a.int64_acc;
    if (!fast_) return;
    act_offset_ = act_offset_for(*simd_, a.act_bits);
    const int64_t pair_max = 2 * ((int64_t{1} << a.act_bits) - 1) * a.wmax;  // of one u8 x s8 pair sum
    safe16_ = pair_max <= 32767;
    sum16_ = 4 * pair_max <= 32767 ? 4 : 2 * pair_max <= 32767 ? 2 : 1;
    const int64_t step_max = 4 * ((int64_t{1} << a.act_bits) - 1) * a.wmax;  // of one step's 4 products
    steps16_ = (a.act_bits <= 7 && step_max > 0) ? 32767 / step_max : 0;
    // A one-channel input with a kernel of 2-4 columns (a grayscale stem): the folded layout
    // (simd.h ConvGeometry::fold), one step per kernel row; not on the expanded (AMX) layout.
    folded_ = cg_ == 1 && group_ == 1 && kw_ >= 2 && kw_ <= 4 && !simd_->conv_expand;
    if (state_.weights_constant()) pack_weights(state_.weights_at_creation(), &packed_);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return guarded(op_, node_, [&] { compute(raw); });
  }

 private:
  // The decoded weights (out_channels rows of k_padded) as the depthwise path's float32 rows of k
  // and as int16 blocks of kDepthwiseLanesMax channels (DepthwiseTask::w16).
  struct DwWeights {
    std::vector<float> f;
    std::vector<int16_t> w16;
  };
  void depthwise_weights(const int16_t* decoded, DwWeights* out) const {
    const WeightedAttrs& a = state_.attrs();
    const int64_t o = a.out_channels, k = a.k, blocks = (o + kDepthwiseLanesMax - 1) / kDepthwiseLanesMax;
    out->f.resize(static_cast<size_t>(o * k));
    out->w16.assign(static_cast<size_t>(blocks * k * kDepthwiseLanesMax), 0);
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t j = 0; j < k; ++j) {
        const int16_t w = decoded[oc * a.k_padded + j];
        out->f[static_cast<size_t>(oc * k + j)] = static_cast<float>(w);
        const int64_t b = oc / kDepthwiseLanesMax, c = oc % kDepthwiseLanesMax;
        out->w16[static_cast<size_t>((b * k + j) * kDepthwiseLanesMax + c)] = w;
      }
  }

  // The decoded weights in the SIMD path's layout (simd.h).
  void pack_weights(const int16_t* decoded, PackedWeights* out) const {
    if (simd_->conv_expand) {
      pack_conv_weights_tiles(state_.attrs(), decoded, group_, kh_, kw_, act_offset_, out);
    } else {
      pack_conv_weights(state_.attrs(), decoded, group_, kh_, kw_, act_offset_, out, folded_);
    }
  }

  enum class Quantizer { kNone, kLsq, kAsq };

  // The fused op's output quantizer (attributes quantizer, q_bits, q_signed, q_step) and, when
  // they are constant, the shapes of its adapter inputs.
  void init_fused(const OrtKernelInfo* info) {
    Attributes attrs(info, op_);
    const std::string kind = attrs.get_string("quantizer", "none");
    if (kind == "none") {
      quantizer_ = Quantizer::kNone;
      return;
    }
    if (kind == "lsq") {
      quantizer_ = Quantizer::kLsq;
    } else if (kind == "asq") {
      quantizer_ = Quantizer::kAsq;
    } else {
      invalid(op_, "attribute 'quantizer'='", kind, "' must be none, lsq or asq");
    }
    q_ = read_quant_params(info, op_, "q_");
    if (quantizer_ != Quantizer::kAsq) return;
    ConstantInput in[4];
    for (size_t i = 0; i < 4; ++i) in[i] = constant_input(info, 6 + i);
    if (in[0].is_constant && in[1].is_constant && in[2].is_constant && in[3].is_constant) {
      for (size_t i = 0; i < 4; ++i)
        if (in[i].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) invalid(op_, "input '", kAdapterNames[i], "' must be float32");
      check_adapters(op_, kAdapterNames, in[0].shape, in[1].shape, in[2].shape, in[3].shape,
                     state_.attrs().out_channels, q_.groups, "q_groups");
      // Constant initializers live as long as the session: read once, not at every Compute.
      adapter_.constant = true;
      adapter_.w1 = static_cast<const float*>(in[0].data);
      adapter_.b1 = static_cast<const float*>(in[1].data);
      adapter_.w2 = static_cast<const float*>(in[2].data);
      adapter_.b2 = static_cast<const float*>(in[3].data)[0];
      adapter_.hidden = in[0].shape[0];
    }
  }

  // The output quantizer's ASQ adapter when its four inputs are constant initializers.
  struct ConstantAdapter {
    bool constant = false;
    const float* w1 = nullptr;
    const float* b1 = nullptr;
    const float* w2 = nullptr;
    float b2 = 0.0f;
    int64_t hidden = 0;
  };

  // Reads and checks the attributes (before WeightedState decodes constant weights).
  WeightedState init(const OrtKernelInfo* info, const char* op) {
    WeightedAttrs a = read_weighted_attrs(info, op, 4);
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
    const InputView x = input_view(op_, raw, 0, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (x.rank != 4)
      invalid(op_, "input 'X' must be (N, C, H, W), got rank ", x.rank, " shape ", shape_str(x.shape()));
    const int64_t n = x.dims[0], c = x.dims[1], h = x.dims[2], w = x.dims[3];
    if (c != group_ * cg_)
      invalid(op_, "input 'X' has ", c, " channels, expected group * weight_shape[1] = ", group_, " * ", cg_, " = ",
              group_ * cg_);
    const WeightedState::Scales sc = state_.scales(ctx, n);
    const uint8_t* xd = static_cast<const uint8_t*>(x.data);
    state_.check_codes(xd, x.count, simd_);
    const int64_t oh = conv_out(op_, h, kh_, sh_, pt_, pb_, dh_);
    const int64_t ow = conv_out(op_, w, kw_, sw_, pl_, pr_, dw_);
    if (oh < 1 || ow < 1)
      invalid(op_, "output would be empty (", oh, "x", ow, ") for input ", h, "x", w, " with kernel ", kh_, "x", kw_,
              ", strides [", sh_, ", ", sw_, "], pads [", pt_, ", ", pl_, ", ", pb_, ", ", pr_, "], dilations [", dh_,
              ", ", dw_, "]");
    std::vector<int16_t> w_scratch;
    const int16_t* wts = state_.weights(ctx, w_scratch);
    const int64_t o = a.out_channels;
    const int64_t yshape[4] = {n, o, oh, ow};
    Extras ex;
    if (fused_) {
      read_fused(raw, yshape, &ex);
    } else {
      ex.y = ctx.GetOutput(0, yshape, 4).GetTensorMutableData<float>();
    }
    const bool quantize = ex.q != nullptr;
    if (n == 0 || (ex.y == nullptr && !quantize)) return;
    if (depthwise_) {
      compute_depthwise(ctx, xd, sc, wts, n, h, w, oh, ow, ex);
      trace_.ran(simd_->isa, depthwise_path(*simd_), kDepthwise);
      return;
    }
    if (fast_ && compute_fast(ctx, xd, sc, wts, n, h, w, oh, ow, ex)) {
      trace_part(trace_, *simd_, conv_path(*simd_));
      return;
    }

    // The portable path: the conv into Y (or a scratch tensor), then the residual and ReLU, then
    // the quantizer per sample. Another selected path comes here only for int64 accumulators or
    // an input too large for its re-layout, and says so (QEXPORT_KERNEL_TRACE).
    if (simd_->isa == Isa::kScalar) {
      trace_.ran(Isa::kScalar, Isa::kScalar);
    } else {
      trace_.ran(simd_->isa, Isa::kScalar, !fast_ ? (a.int64_acc ? kInt64Acc : kNotInPath) : kInputTooLarge);
    }
    std::vector<float> y_scratch;
    float* y = ex.y;
    if (y == nullptr) {
      y_scratch.resize(static_cast<size_t>(n * o * oh * ow));
      y = y_scratch.data();
    }
    Geometry g;
    g.x = xd, g.y = y, g.w = wts, g.sc = sc;
    g.relu = a.relu && ex.residual == nullptr;
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
    const int64_t sample = o * oh * ow;
    parallel_for(ctx, static_cast<size_t>(n), [&](size_t i) {
      const int64_t ni = static_cast<int64_t>(i);
      float* yn = y + ni * sample;
      if (ex.residual != nullptr) {
        const float* rn = ex.residual + ni * sample;
        for (int64_t k = 0; k < sample; ++k) {
          float v = yn[k] + rn[k];
          if (a.relu) v = (v < 0.0f) ? 0.0f : v;
          yn[k] = v;
        }
      }
      if (quantize) quantize_sample(yn, ni, o, oh * ow, ex);
    });
  }

  // The fused op's optional inputs and outputs.
  struct Extras {
    const float* residual = nullptr;  // R: (N, O, OH, OW)
    const float* w1 = nullptr;        // QW1 .. QB2: the ASQ adapter
    const float* b1 = nullptr;
    const float* w2 = nullptr;
    float b2 = 0.0f;
    int64_t hidden = 0;
    float* y = nullptr;        // Y, or nullptr when the node does not use it
    uint8_t* q = nullptr;      // Q, or nullptr (no quantizer, or the node does not use it)
    float* q_scale = nullptr;  // Q_scale
  };

  void read_fused(OrtKernelContext* raw, const int64_t yshape[4], Extras* ex) const {
    constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    const InputView r = input_view(op_, raw, 5, "R", kF32, /*optional=*/true);
    if (r.present) {
      if (r.rank != 4 || r.dims[0] != yshape[0] || r.dims[1] != yshape[1] || r.dims[2] != yshape[2] ||
          r.dims[3] != yshape[3])
        invalid(op_, "input 'R' has shape ", shape_str(r.shape()), ", expected the conv's output shape ",
                shape_str(std::vector<int64_t>(yshape, yshape + 4)));
      ex->residual = static_cast<const float*>(r.data);
    }
    if (adapter_.constant) {  // checked once, at kernel creation
      ex->w1 = adapter_.w1, ex->b1 = adapter_.b1, ex->w2 = adapter_.w2, ex->b2 = adapter_.b2;
      ex->hidden = adapter_.hidden;
    } else {
      InputView ad[4];
      for (size_t i = 0; i < 4; ++i) ad[i] = input_view(op_, raw, 6 + i, kAdapterNames[i], kF32, /*optional=*/true);
      if (quantizer_ == Quantizer::kAsq) {
        for (size_t i = 0; i < 4; ++i)
          if (!ad[i].present) invalid(op_, "input '", kAdapterNames[i], "' is missing (quantizer='asq')");
        check_adapters(op_, kAdapterNames, ad[0].shape(), ad[1].shape(), ad[2].shape(), ad[3].shape(), yshape[1],
                       q_.groups, "q_groups");
        ex->w1 = static_cast<const float*>(ad[0].data);
        ex->b1 = static_cast<const float*>(ad[1].data);
        ex->w2 = static_cast<const float*>(ad[2].data);
        ex->b2 = static_cast<const float*>(ad[3].data)[0];
        ex->hidden = ad[0].dims[0];
      } else {
        for (size_t i = 0; i < 4; ++i)
          if (ad[i].present) invalid(op_, "input '", kAdapterNames[i], "' is only used with quantizer='asq'");
      }
    }
    ex->y = static_cast<float*>(optional_output(raw, 0, yshape, 4));
    if (quantizer_ == Quantizer::kNone) {
      if (optional_output(raw, 1, yshape, 4) != nullptr || optional_output(raw, 2, yshape, 1) != nullptr)
        invalid(op_, "outputs 'Q' and 'Q_scale' need attribute quantizer='lsq' or 'asq'");
      return;
    }
    ex->q = static_cast<uint8_t*>(optional_output(raw, 1, yshape, 4));
    ex->q_scale = static_cast<float*>(optional_output(raw, 2, yshape, 1));
    if ((ex->q == nullptr) != (ex->q_scale == nullptr)) invalid(op_, "outputs 'Q' and 'Q_scale' go together");
  }

  // The ASQ quantizer's step of a sample from its o plane means.
  float asq_step(const double* means, int64_t o, const Extras& ex) const {
    return asq_scale(means, o, ex.w1, ex.b1, ex.w2, ex.b2, ex.hidden, q_);
  }

  // Codes and scale of sample ni from its conv output yn (o planes of `plane` values), exactly
  // as LsqQuantize / AsqQuantize.
  // known_means: the ASQ plane means when the caller has them, else nullptr.
  void quantize_sample(const float* yn, int64_t ni, int64_t o, int64_t plane, const Extras& ex,
                       const double* known_means = nullptr) const {
    float s = q_.step;
    if (known_means != nullptr) {
      s = asq_step(known_means, o, ex);
    } else if (quantizer_ == Quantizer::kAsq) {
      thread_local std::vector<double> p;
      p.resize(static_cast<size_t>(o));
      simd_->plane_means(yn, static_cast<size_t>(o), static_cast<size_t>(plane), p.data());
      s = asq_step(p.data(), o, ex);
    }
    ex.q_scale[ni] = s;
    simd_->quantize(yn, ex.q + ni * o * plane, static_cast<size_t>(o * plane), s, q_);
  }

  // The depthwise path (simd.h, DepthwiseTask): per sample, every output channel and then the
  // quantizer; a single image's channels split over threads when the conv is large enough.
  void compute_depthwise(Ort::KernelContext& ctx, const uint8_t* x, const WeightedState::Scales& sc,
                         const int16_t* wts, int64_t n, int64_t h, int64_t w, int64_t oh, int64_t ow,
                         const Extras& ex) const {
    const WeightedAttrs& a = state_.attrs();
    DwWeights local;
    const DwWeights* dw = &dw_weights_;
    if (!state_.weights_constant()) {
      depthwise_weights(wts, &local);
      dw = &local;
    }
    const int64_t o = a.out_channels, plane_in = h * w, plane_out = oh * ow, sample = o * plane_out;
    const bool quantize = ex.q != nullptr;
    DepthwiseTask proto;
    proto.h = h, proto.w = w, proto.oh = oh, proto.ow = ow, proto.kh = kh_, proto.kw = kw_;
    proto.sh = sh_, proto.sw = sw_, proto.dh = dh_, proto.dw = dw_, proto.pt = pt_, proto.pl = pl_;
    proto.mult = o / group_;
    proto.zero_point = a.act_zero_point;
    const int64_t code_max = (int64_t{1} << a.act_bits) - 1;
    const int64_t dev_max = a.act_zero_point > code_max - a.act_zero_point ? a.act_zero_point : code_max - a.act_zero_point;
    proto.int16 = kh_ * kw_ * dev_max * a.wmax <= 32767;
    proto.wf = dw->f.data();
    proto.w16 = dw->w16.data();
    proto.w_scale = sc.w_scale, proto.bias = sc.bias;
    proto.relu = a.relu;
    const int64_t row_max = ((kh_ - 1) * dh_) / sh_, col_max = ((kw_ - 1) * dw_) / sw_;
    proto.ws = ow + col_max, proto.hs = oh + row_max;
    proto.nq = oh * proto.ws;
    // The last block reads up to nq + block - 1 + row_max*ws + col_max <= hs*ws + col_max + block - 1.
    proto.psize = (proto.hs * proto.ws + col_max + kDepthwiseBlock + 15) / 16 * 16;
    thread_local std::vector<int64_t> tap_off;
    tap_off.resize(static_cast<size_t>(kh_ * kw_));
    for (int64_t i = 0; i < kh_; ++i)
      for (int64_t j = 0; j < kw_; ++j) {
        const int64_t plane = ((i * dh_) % sh_) * sw_ + (j * dw_) % sw_;
        tap_off[static_cast<size_t>(i * kw_ + j)] = plane * proto.psize + ((i * dh_) / sh_) * proto.ws + (j * dw_) / sw_;
      }
    proto.tap_off = tap_off.data();
    const int64_t slots = proto.nq <= kDepthwiseSmall ? kDepthwiseSlots : 1;
    const int64_t acc_floats = (proto.nq + kDepthwiseBlock - 1) / kDepthwiseBlock * kDepthwiseBlock;
    depthwise_tile(proto.mult, h, w, oh, ow, kh_, kw_, sh_, sw_, dh_, dw_, pt_, pl_, &proto.tile_h, &proto.tile_w);
    const int64_t plane_floats = slots * sh_ * sw_ * proto.psize + acc_floats + kDepthwiseSlots * kDepthwiseSmall;
    const int64_t tile_floats =
        proto.tile_h > 0 ? depthwise_tile_floats(proto.tile_h, proto.tile_w, kh_ * kw_) : 0;
    const size_t buf_floats = static_cast<size_t>(plane_floats > tile_floats ? plane_floats : tile_floats);
    auto task_for = [&](int64_t ni, float* yn, float* buf) {
      DepthwiseTask t = proto;
      t.x = x + ni * group_ * plane_in;
      t.x_end = t.x + group_ * plane_in;
      t.x_scale = sc.x_scale[sc.x_scale_per_sample ? ni : 0];
      t.residual = ex.residual != nullptr ? ex.residual + ni * sample : nullptr;
      t.y = yn;
      t.buf = buf;
      t.o0 = 0, t.o1 = o;
      return t;
    };
    if (n > 1) {
      parallel_for(ctx, static_cast<size_t>(n), [&](size_t i) {
        const int64_t ni = static_cast<int64_t>(i);
        float* yn = ex.y != nullptr ? ex.y + ni * sample : thread_scratch<kOutputScratch>(static_cast<size_t>(sample));
        simd_->depthwise(task_for(ni, yn, thread_scratch<kDepthwiseScratch>(buf_floats)));
        if (quantize) quantize_sample(yn, ni, o, plane_out, ex);
      });
      return;
    }
    float* y0 = ex.y != nullptr ? ex.y : thread_scratch<kOutputScratch>(static_cast<size_t>(sample));
    const int64_t per_channel = plane_out * a.k;
    // Channels are split in units of whole groups (each plane built once) and, for the channel
    // kernel, whole vectors of channels.
    int64_t unit = proto.mult;
    if (proto.tile_h > 0) unit = (unit + kDepthwiseLanesMax - 1) / kDepthwiseLanesMax * kDepthwiseLanesMax;
    // Tasks of about kDepthwiseTaskMacs (an even number of them: even_split).
    const Split split = even_split((o + unit - 1) / unit, (o * per_channel + kDepthwiseTaskMacs - 1) / kDepthwiseTaskMacs);
    const int64_t tasks = split.tasks, chunk = split.per_task * unit;
    // The ASQ means of a task's channels right after it (in cache, on the thread that wrote them).
    thread_local std::vector<double> means_buf;
    double* means = nullptr;
    if (quantize && quantizer_ == Quantizer::kAsq) {
      means_buf.resize(static_cast<size_t>(o));
      means = means_buf.data();  // the calling thread's: not means_buf.data() in the tasks
    }
    auto run = [&](int64_t o0, int64_t o1) {
      DepthwiseTask t = task_for(0, y0, thread_scratch<kDepthwiseScratch>(buf_floats));
      t.o0 = o0, t.o1 = o1;
      simd_->depthwise(t);
      if (means != nullptr)
        simd_->plane_means(y0 + o0 * plane_out, static_cast<size_t>(o1 - o0), static_cast<size_t>(plane_out),
                           means + o0);
    };
    if (tasks > 1 && o * per_channel >= (kDepthwiseParallelMinMacs >> simd_->parallel_shift)) {
      parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t ti) {
        const int64_t o0 = static_cast<int64_t>(ti) * chunk;
        run(o0, o0 + chunk < o ? o0 + chunk : o);
      });
    } else {
      run(0, o);
    }
    if (quantize) quantize_image(ctx, y0, o, plane_out, ex, means);
  }

  // Channel blocks [b0, b1) of the conv in t (every vector), then the ASQ plane means of their
  // channels while their output is still in cache, on the thread that wrote it (a large output
  // would otherwise be read back from memory, a small one by another thread).
  void conv_blocks_with_means(ConvTask t, int64_t b0, int64_t b1, int64_t plane, double* means) const {
    const int64_t cb = simd_->conv_block, c0 = b0 * cb, c1 = std::min(b1 * cb, t.og);
    t.v0 = 0, t.v1 = t.g->vectors, t.b0 = b0, t.b1 = b1;
    simd_->conv(t);
    simd_->plane_means(t.y + c0 * plane, static_cast<size_t>(c1 - c0), static_cast<size_t>(plane), means + c0);
  }

  // quantize_sample of a single image: a large one's means (by channels) and codes (by ranges)
  // split over threads; each value is computed as in quantize_sample. known_means: the ASQ plane
  // means when the caller has them, else nullptr.
  void quantize_image(Ort::KernelContext& ctx, const float* y0, int64_t o, int64_t plane, const Extras& ex,
                      const double* known_means = nullptr) const {
    const int64_t count = o * plane;
    if (count < (kParallelQuantize >> simd_->parallel_shift)) {
      quantize_sample(y0, 0, o, plane, ex, known_means);
      return;
    }
    float s = q_.step;
    if (known_means != nullptr) {
      s = asq_step(known_means, o, ex);
    } else if (quantizer_ == Quantizer::kAsq) {
      thread_local std::vector<double> p;
      p.resize(static_cast<size_t>(o));
      double* means = p.data();
      // Channels in tasks of about kQuantizeTask values.
      const Split by_channels = even_split(o, (count + kQuantizeTask - 1) / kQuantizeTask);
      const int64_t chunk = by_channels.per_task;
      parallel_for(ctx, static_cast<size_t>(by_channels.tasks), [&](size_t t) {
        const int64_t c0 = static_cast<int64_t>(t) * chunk, nc = chunk < o - c0 ? chunk : o - c0;
        simd_->plane_means(y0 + c0 * plane, static_cast<size_t>(nc), static_cast<size_t>(plane), means + c0);
      });
      s = asq_step(means, o, ex);
    }
    ex.q_scale[0] = s;
    // Tasks of about kQuantizeTask values, whole blocks of 64.
    const Split by_values = even_split((count + 63) / 64, (count + kQuantizeTask - 1) / kQuantizeTask);
    const int64_t per_task = by_values.per_task * 64;
    parallel_for(ctx, static_cast<size_t>(by_values.tasks), [&](size_t t) {
      const int64_t i0 = static_cast<int64_t>(t) * per_task;
      const int64_t n = per_task < count - i0 ? per_task : count - i0;
      simd_->quantize(y0 + i0, ex.q + i0, static_cast<size_t>(n), s, q_);
    });
  }

  // A single image split into bands of output rows, each task re-laying out the buffer rows its
  // vectors read into its own thread's buffer and then computing them for every channel block: no
  // serial re-layout before the split, and no buffer written by one core and read by another
  // (ResNet-20 at batch 1 with 2 threads: the serial re-layout cost 13% of the run, twice its share
  // at 1 thread). A band has at least 4 * row_max rows, so that the rows re-laid out twice (a
  // band's last row_max rows are the next band's first) stay few; a thread that takes the next
  // band of the same call after its own skips the rows it already has.
  void conv_bands(Ort::KernelContext& ctx, const ConvTask& base, int64_t pairs, int64_t pair_chunk, int64_t nob) const {
    const ConvGeometry& g = *base.g;
    const int64_t vg = simd_->conv_group, lanes = simd_->conv_lanes;
    const int64_t per_row = g.row_mode ? (g.ow + lanes - 1) / lanes : 0;
    const int64_t min_rows = g.row_max > 0 ? 4 * g.row_max : 1;
    const int64_t min_vectors = g.row_mode ? min_rows * per_row : (min_rows * g.ws + lanes - 1) / lanes;
    const int64_t min_chunk = (min_vectors + vg - 1) / vg;
    if (pair_chunk < min_chunk) pair_chunk = min_chunk;
    const int64_t bands = (pairs + pair_chunk - 1) / pair_chunk;
    // The last cell a vector starting at flat position q reads, relative to q.
    const int64_t reach = lanes - 1 + g.row_max * g.ws + (g.ws - g.ow);
    static std::atomic<uint64_t> calls{0};
    const uint64_t call = calls.fetch_add(1, std::memory_order_relaxed) + 1;
    auto body = [&](size_t bi) {
      struct Filled {
        uint64_t call = 0;
        int64_t row0 = 0, row1 = 0;
      };
      thread_local Scratch<uint8_t> band_buf;
      thread_local Filled filled;
      ConvTask task = base;
      task.buf = band_buf.get(g.buf_bytes);
      task.v0 = static_cast<int64_t>(bi) * pair_chunk * vg;
      task.v1 = task.v0 + pair_chunk * vg < g.vectors ? task.v0 + pair_chunk * vg : g.vectors;
      task.b0 = 0, task.b1 = nob;
      const int64_t first = g.vstart[task.v0], last = g.vstart[task.v1 - 1] + reach;
      int64_t row0 = first / g.ws;
      const int64_t row1 = last / g.ws + 1 < g.hs ? last / g.ws + 1 : g.hs;
      if (filled.call == call && filled.row0 <= row0 && row0 <= filled.row1) {
        const int64_t have = filled.row1;
        filled.row1 = have > row1 ? have : row1;
        row0 = have;
      } else {
        filled.call = call, filled.row0 = row0, filled.row1 = row1;
      }
      if (row0 < row1) {
        task.row0 = row0, task.row1 = row1;
        simd_->relayout(task);
      }
      simd_->conv(task);
    };
    if (bands > 1) {
      parallel_for(ctx, static_cast<size_t>(bands), body);
    } else {
      body(0);
    }
  }

  // The re-layout of a single image whose conv is split over threads by channel blocks: a large
  // buffer is filled by bands of rows in parallel (disjoint rows of the shared buffer), a small one
  // by the calling thread.
  void relayout_image(Ort::KernelContext& ctx, const ConvTask& base) const {
    const ConvGeometry& g = *base.g;
    const int64_t cells = g.planes * g.hs * g.ws;
    const int64_t bands = std::min<int64_t>(cells / kRelayoutBandCells, g.hs / 4);
    if (bands < 2) {
      simd_->relayout(base);
      return;
    }
    parallel_for(ctx, static_cast<size_t>(bands), [&](size_t bi) {
      ConvTask task = base;
      task.row0 = g.hs * static_cast<int64_t>(bi) / bands;
      task.row1 = g.hs * (static_cast<int64_t>(bi) + 1) / bands;
      simd_->relayout(task);
    });
  }

  // The tables of ConvGeometry (vstart, vseg, seg, off) for an input of g.h x g.w.
  struct FastTables {
    int64_t h = -1, w = -1;
    std::vector<int32_t> off, vstart, vseg;
    std::vector<ConvSegment> segs;
  };

  // The tables for g's input size: the kept ones when the size is the last call's, else new ones
  // (then kept). A call holds its tables while another call (another size) replaces them.
  std::shared_ptr<const FastTables> fast_tables(const ConvGeometry& g, int64_t lanes) const {
    {
      std::lock_guard<std::mutex> lock(tables_mutex_);
      if (tables_ != nullptr && tables_->h == g.h && tables_->w == g.w) return tables_;
    }
    auto t = std::make_shared<FastTables>();
    t->h = g.h, t->w = g.w;
    build_vectors(g, lanes, &t->vstart, &t->vseg, &t->segs);
    std::vector<int32_t>& off = t->off;
    off.resize(static_cast<size_t>(g.steps));
    if (g.expand) {
      for (int64_t i = 0; i < kh_; ++i)
        for (int64_t ci = 0; ci < g.chunks; ++ci) {
          const int64_t plane = ((i * dh_) % sh_) * g.chunks * 16 + ci * 16;
          const int64_t cell = plane * g.plane_pos + ((i * dh_) / sh_) * g.ws;
          off[static_cast<size_t>(i * g.chunks + ci)] = static_cast<int32_t>(cell * 4);
        }
    } else {
      for (int64_t g4 = 0; g4 < g.cg4; ++g4)  // g's kernel (folded: kh x 1)
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t phase = ((i * g.dh) % g.sh) * g.sw + (j * g.dw) % g.sw;
            const int64_t cell =
                (g4 * g.phases + phase) * g.plane_pos + ((i * g.dh) / g.sh) * g.ws + (j * g.dw) / g.sw;
            off[static_cast<size_t>((g4 * g.kh + i) * g.kw + j)] = static_cast<int32_t>(cell * 4);
          }
    }
    std::lock_guard<std::mutex> lock(tables_mutex_);
    tables_ = t;
    return t;
  }

  // The SIMD path; false (nothing done) when the re-laid-out input would be too large for it.
  bool compute_fast(Ort::KernelContext& ctx, const uint8_t* x, const WeightedState::Scales& sc, const int16_t* wts,
                    int64_t n, int64_t h, int64_t w, int64_t oh, int64_t ow, const Extras& ex) const {
    const WeightedAttrs& a = state_.attrs();
    const int64_t lanes = simd_->conv_lanes;
    ConvGeometry g;
    g.cg = cg_, g.cg4 = (cg_ + 3) / 4;
    g.kh = kh_, g.kw = kw_, g.sh = sh_, g.sw = sw_, g.dh = dh_, g.dw = dw_, g.pt = pt_, g.pl = pl_;
    g.h = h, g.w = w, g.oh = oh, g.ow = ow;
    if (folded_) {  // the equivalent conv of kw_ channels and a kh_ x 1 kernel (simd.h)
      g.fold = kw_, g.fold_sw = sw_, g.fold_dw = dw_, g.fold_pl = pl_;
      g.cg = kw_, g.cg4 = 1, g.kw = 1, g.sw = 1, g.dw = 1, g.pl = 0;
    }
    g.expand = simd_->conv_expand;
    g.row_max = ((kh_ - 1) * dh_) / sh_;
    g.hs = oh + g.row_max;
    g.phases = g.sh * g.sw;
    // Cell layout: tap (i, j) reads column x + (j*dw)/sw of its phase plane. Expanded layout:
    // each kernel column has its own (shifted) plane, so the planes need only ow columns.
    const int64_t col_max = g.expand ? 0 : ((g.kw - 1) * g.dw) / g.sw;
    g.ws = ow + col_max;
    if (g.expand) {
      g.chunks = (kw_ * g.cg4 + 15) / 16;
      g.planes = sh_ * g.chunks * 16;
      g.steps = kh_ * g.chunks;
    } else {
      g.planes = g.cg4 * g.phases;
      g.steps = g.cg4 * g.kh * g.kw;
    }
    const double cells = static_cast<double>(g.hs) * static_cast<double>(g.ws) + static_cast<double>(lanes + col_max);
    if (cells * static_cast<double>(g.planes) * 4.0 > static_cast<double>(INT32_MAX) / 2) return false;
    g.plane_pos = (g.hs * g.ws + lanes + col_max + 15) / 16 * 16;
    g.buf_bytes = static_cast<size_t>(g.planes * g.plane_pos * 4);
    const int64_t flat = (oh * g.ws + lanes - 1) / lanes, by_row = oh * ((ow + lanes - 1) / lanes);
    g.row_mode = by_row <= flat;
    g.vectors = g.row_mode ? by_row : flat;
    // The vector and step tables, built for the first input size and kept while it repeats
    // (building them took about 1 us per conv call: 3-4% of ResNet-20 at batch 1).
    const std::shared_ptr<const FastTables> tables = fast_tables(g, lanes);
    g.vstart = tables->vstart.data(), g.vseg = tables->vseg.data(), g.seg = tables->segs.data();
    g.off = tables->off.data();

    PackedWeights local;
    const PackedWeights* pw = &packed_;
    if (!state_.weights_constant()) {
      pack_weights(wts, &local);
      pw = &local;
    }
    const int64_t og = a.out_channels / group_;
    const int64_t cb = simd_->conv_block;
    const int64_t nob = (og + cb - 1) / cb;
    const int64_t plane_in = h * w, plane_out = oh * ow;
    const int64_t c = group_ * cg_, o = a.out_channels, sample = o * plane_out;
    const bool quantize = ex.q != nullptr;
    ConvTask proto;
    proto.g = &g;
    proto.pad_code = static_cast<uint8_t>(a.act_zero_point ^ act_offset_);
    proto.act_offset = act_offset_;
    proto.og = og;
    proto.relu = a.relu;
    proto.safe16 = safe16_, proto.sum16 = sum16_, proto.steps16 = steps16_;
    // The task of sample ni, group gi, writing the sample's output at yn.
    auto make_task = [&](int64_t ni, int64_t gi, float* yn, uint8_t* buf) {
      ConvTask t = proto;
      t.x = x + (ni * c + gi * cg_) * plane_in;
      t.w = pw->w.data() + gi * nob * g.steps * cb * (g.expand ? 64 : 4);
      t.init = pw->init.data() + gi * nob * cb;
      t.x_scale = sc.x_scale[sc.x_scale_per_sample ? ni : 0];
      t.w_scale = sc.w_scale + gi * og;
      t.bias = sc.bias + gi * og;
      t.residual = ex.residual != nullptr ? ex.residual + ni * sample + gi * og * plane_out : nullptr;
      t.y = yn + gi * og * plane_out;
      t.buf = buf;
      t.row0 = 0, t.row1 = g.hs;
      return t;
    };
    // Y, or a scratch plane set of one sample when only the codes are wanted.
    auto sample_out = [&](int64_t ni) {
      if (ex.y != nullptr) return ex.y + ni * sample;
      return thread_scratch<kOutputScratch>(static_cast<size_t>(sample));
    };

    // A large output with an ASQ quantizer: the conv by whole channel blocks, each block's plane
    // means taken right after it while its output is in cache (else read back from memory).
    const bool by_block = quantize && quantizer_ == Quantizer::kAsq && group_ == 1 && nob >= kBlockwiseMinBlocks &&
                          o * plane_out >= kBlockwiseMinOutputs;
    if (n > 1) {
      // One task per sample: for each group, re-layout and every vector and channel block; then
      // the quantizer while the output is in cache.
      parallel_for(ctx, static_cast<size_t>(n), [&](size_t i) {
        const int64_t ni = static_cast<int64_t>(i);
        thread_local Scratch<uint8_t> buf_scratch;
        uint8_t* buf = buf_scratch.get(g.buf_bytes);
        float* yn = sample_out(ni);
        thread_local std::vector<double> p;  // by_block (one group): each block's means while in cache
        if (by_block) p.resize(static_cast<size_t>(nob * cb));
        for (int64_t gi = 0; gi < group_; ++gi) {
          ConvTask task = make_task(ni, gi, yn, buf);
          simd_->relayout(task);
          if (by_block) {
            for (int64_t b = 0; b < nob; ++b) conv_blocks_with_means(task, b, b + 1, plane_out, p.data());
            continue;
          }
          task.v0 = 0, task.v1 = g.vectors, task.b0 = 0, task.b1 = nob;
          simd_->conv(task);
        }
        if (quantize) quantize_sample(yn, ni, o, plane_out, ex, by_block ? p.data() : nullptr);
      });
      return true;
    }
    float* y0 = sample_out(0);
    double* known_means = nullptr;  // the ASQ plane means, when the conv's tasks took them
    if (group_ > 1) {
      parallel_for(ctx, static_cast<size_t>(group_), [&](size_t gi) {
        thread_local Scratch<uint8_t> buf;
        ConvTask task = make_task(0, static_cast<int64_t>(gi), y0, buf.get(g.buf_bytes));
        simd_->relayout(task);
        task.v0 = 0, task.v1 = g.vectors, task.b0 = 0, task.b1 = nob;
        simd_->conv(task);
      });
    } else if (by_block) {
      thread_local Scratch<uint8_t> buf;
      const ConvTask base = make_task(0, 0, y0, buf.get(g.buf_bytes));
      relayout_image(ctx, base);
      thread_local std::vector<double> p;
      p.resize(static_cast<size_t>(nob * cb));
      double* means = p.data();  // the calling thread's (p is thread_local: not p.data() in the tasks)
      parallel_for(ctx, static_cast<size_t>(nob),
                   [&](size_t b) {
                     conv_blocks_with_means(base, static_cast<int64_t>(b), static_cast<int64_t>(b) + 1, plane_out, means);
                   });
      quantize_image(ctx, y0, o, plane_out, ex, means);
      return true;
    } else {
      // A single image: its vectors (pairs) and channel blocks in tasks of at least
      // kFastTaskMacs multiply-adds.
      thread_local Scratch<uint8_t> buf;
      const ConvTask base = make_task(0, 0, y0, buf.get(g.buf_bytes));
      const int64_t vg = simd_->conv_group;
      const int64_t pairs = (g.vectors + vg - 1) / vg;
      const int64_t unit = vg * lanes * cb * a.k;  // one vector group x one channel block
      const int64_t task_macs = kFastTaskMacs * simd_->conv_speed;
      const int64_t per_task = (task_macs + unit - 1) / unit;
      // A small conv runs in the calling thread: measured on ResNet-20 at batch 1 (2.4M
      // multiply-adds per conv, ~10 us), splitting it over 2 threads made the model 1.4x slower
      // (ONNX Runtime's cost per ParallelFor plus the serial re-layout and quantizer).
      const int shift = simd_->parallel_shift;
      const bool split = pairs * nob * unit >= (kParallelMinMacs * simd_->conv_speed >> shift) ||
                         og * plane_out >= (kParallelMinOutputs >> shift);
      // A task takes pair_chunk vector groups of block_chunk channel blocks.
      int64_t pair_chunk = per_task >= nob ? (per_task + nob - 1) / nob : 1;
      int64_t block_chunk = per_task >= nob ? nob : per_task;
      // A split ASQ conv on a small plane (at most kTaskMeansPairs vector groups): each task
      // takes every vector of its channel blocks and then their plane means, on the thread that
      // wrote them, instead of a parallel section of its own for the means.
      const bool task_means = split && block_chunk < nob && quantize && quantizer_ == Quantizer::kAsq &&
                              pairs <= kTaskMeansPairs;
      if (task_means) {
        pair_chunk = pairs;
        block_chunk = even_split(nob, (pairs * nob + per_task - 1) / per_task).per_task;
        thread_local std::vector<double> means_buf;
        means_buf.resize(static_cast<size_t>(nob * cb));
        known_means = means_buf.data();  // the calling thread's: not means_buf.data() in the tasks
      }
      if (split && block_chunk == nob && !task_means) {
        conv_bands(ctx, base, pairs, pair_chunk, nob);
      } else {
        if (split) {
          relayout_image(ctx, base);
        } else {
          simd_->relayout(base);
        }
        const int64_t npc = (pairs + pair_chunk - 1) / pair_chunk, nbc = (nob + block_chunk - 1) / block_chunk;
        const size_t ntasks = static_cast<size_t>(npc * nbc);
        auto body = [&](size_t ti) {
          const int64_t t = static_cast<int64_t>(ti);
          const int64_t b0 = (t % nbc) * block_chunk, b1 = b0 + block_chunk < nob ? b0 + block_chunk : nob;
          if (task_means) {  // npc == 1: every vector
            conv_blocks_with_means(base, b0, b1, plane_out, known_means);
            return;
          }
          ConvTask task = base;
          task.v0 = (t / nbc) * pair_chunk * vg;
          task.v1 = task.v0 + pair_chunk * vg < g.vectors ? task.v0 + pair_chunk * vg : g.vectors;
          task.b0 = b0, task.b1 = b1;
          simd_->conv(task);
        };
        if (split) {
          parallel_for(ctx, ntasks, body);
        } else {
          for (size_t ti = 0; ti < ntasks; ++ti) body(ti);
        }
      }
    }
    if (quantize) quantize_image(ctx, y0, o, plane_out, ex, known_means);
    return true;
  }

  struct Geometry {
    const uint8_t* x;
    float* y;
    const int16_t* w;
    WeightedState::Scales sc;
    int64_t n, c, h, wd, oh, ow, o, og, p, block, nblocks;
    bool relu;  // in the epilogue (with a residual, the ReLU comes after it)
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
        for (int64_t r = 0; r < rows; ++r) out[r][p] = epilogue(acc[r], m[r], b[r], g.relu);
      }
    }
  }

  static constexpr const char* kAdapterNames[4] = {"QW1", "QB1", "QW2", "QB2"};

  const char* op_;
  std::string node_;
  bool fused_ = false;
  Quantizer quantizer_ = Quantizer::kNone;
  QuantParams q_;
  ConstantAdapter adapter_;
  int64_t sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0, dh_ = 1, dw_ = 1, group_ = 1;
  int64_t cg_ = 1, kh_ = 1, kw_ = 1;
  WeightedState state_;  // initialised by init(), which sets the fields above
  const SimdKernels* simd_ = nullptr;
  bool fast_ = false;      // the SIMD path (else the portable one)
  bool depthwise_ = false;  // the depthwise path (simd.h, DepthwiseTask)
  bool folded_ = false;     // the SIMD path's folded layout (simd.h ConvGeometry::fold)
  DwWeights dw_weights_;  // constant weights for the depthwise path
  uint8_t act_offset_ = 0;
  bool safe16_ = false;
  int sum16_ = 1;
  int64_t steps16_ = 0;
  PackedWeights packed_;   // constant weights, packed for the SIMD path
  mutable std::mutex tables_mutex_;                  // guards tables_
  mutable std::shared_ptr<const FastTables> tables_;  // the SIMD path's tables of the last input size
  PathTrace trace_;        // QEXPORT_KERNEL_TRACE: the path each Compute ran
};

// The plain conv ops construct ConvKernel(info, name): a conv kernel that is not fused.
struct PlainConv : ConvKernel {
  PlainConv(const OrtKernelInfo* info, const char* op) : ConvKernel(info, op, false) {}
};

// QConvFused (and the version-1 <Fmt>ConvFused): inputs X, X_scale, W, W_scale, B, then the
// optional R, QW1, QB1, QW2, QB2; optional outputs Y (float), Q (uint8 codes), Q_scale (float).
struct FusedConvOp : Ort::CustomOpBase<FusedConvOp, ConvKernel, /*WithStatus=*/true> {
  explicit FusedConvOp(const char* name) : name_(name) {}

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    return guarded(name_, node_name(info), [&] { *kernel = new ConvKernel(info, name_, true); });
  }

  const char* GetName() const { return name_; }
  size_t GetInputTypeCount() const { return 10; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return (index == 0 || index == 2) ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < 5 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t) const { return INPUT_OUTPUT_OPTIONAL; }

 private:
  const char* name_;
};

using PlainConvOp = WeightedOp<PlainConv>;

}  // namespace
}  // namespace qexport

QEXPORT_DEFINE_OP(QConv, qexport::PlainConvOp)
QEXPORT_DEFINE_OP(QConvFused, qexport::FusedConvOp)
// Version 1 (format in the op name; docs/ops.md "Versions"): the same kernels.
QEXPORT_DEFINE_OP(PostConv, qexport::PlainConvOp)
QEXPORT_DEFINE_OP(PotConv, qexport::PlainConvOp)
QEXPORT_DEFINE_OP(UniformConv, qexport::PlainConvOp)
QEXPORT_DEFINE_OP(PostConvFused, qexport::FusedConvOp)
QEXPORT_DEFINE_OP(PotConvFused, qexport::FusedConvOp)
QEXPORT_DEFINE_OP(UniformConvFused, qexport::FusedConvOp)
