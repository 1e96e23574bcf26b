// The interface between the ops (portable C++: attributes, validation, planning, threads) and
// the instruction-set specific kernels (src/kernels/simd_*.cc, each compiled with its own ISA
// flags and selected at run time, see isa.h).
//
// Every path computes exactly the integers of the reference (docs/ops.md):
// * activations are the uint8 codes c; a path whose dot product is signed x signed (ARM sdot)
//   stores them as c - act_offset (act_offset = 128 for 8-bit codes, else 0) so they fit int8;
// * acc = sum (c - act_offset) * w + init[o] with init[o] = -(zp - act_offset) * sum_k w[o, k],
//   which equals sum (c - zp) * w; padded input positions hold the code zp (stored as
//   zp - act_offset), so the correction is the same for every output position;
// * the sums wrap modulo 2^32 (vpdpbusd, sdot, vpaddd), so the result is exact whenever the
//   true value fits int32, which the op's overflow bound guarantees (ops with a larger bound
//   use the portable int64 path);
// * the epilogue is y = float(acc) * (x_scale * w_scale[o]); y = y + b[o]; relu: y < 0 ? 0 : y,
//   each one IEEE float32 operation (no fused multiply-add).
#pragma once

#include <cstddef>
#include <cstdint>

#include "qexport/isa.h"

namespace qexport {

// An activation quantizer: codes = clamp(rint(x / s), lo, hi) + zero_point (docs/ops.md).
struct QuantParams {
  int bits = 0;
  bool is_signed = false;
  float step = 0;
  int zero_point = 0;
  float lo = 0, hi = 0;  // integer range before the zero-point offset
  // AsqQuantize only (docs/ops.md): the adapter's output map and its number of input groups.
  bool beta_relu = true;  // beta_map "relu": max(z, 1e-8); false: "sigmoid2", 2 / (1 + exp(-z))
  int64_t groups = 0;     // 0: one group per channel
};

// ------------------------------------------------------------------------------ conv
// Output channels per packed weight block of the conv kernels.
constexpr int kConvBlock = 8;

// Lanes [lane, lane + n) of a conv vector go to output indices out, out + 1, ... (out = y * ow + x).
struct ConvSegment {
  int32_t lane = 0;
  int32_t n = 0;
  int64_t out = 0;
};

// Geometry of one conv call, shared by its tasks. The input of one sample and group is re-laid
// out into a buffer of planes of hs rows x ws columns of 4-byte cells (the codes of 4 channels),
// padded with the zero-point code; output position (y, x) is the flat position q = y * ws + x,
// so a vector of consecutive q is one contiguous load (im2col-free direct convolution). Vectors
// either run over the flat positions (dropping the ws - ow extra columns of each row) or stay
// within a row, whichever needs fewer.
//
// Cell layout (expand = false): one plane per group of 4 input channels g4 and stride phase
// (py, px); tap (i, j) of channel group g4 is step s = g4*kh*kw + i*kw + j and reads cell
// q + off[s] / 4.
// Expanded layout (expand = true, the AMX path): for each row phase py, kernel column j and
// channel group g4 a plane holding the cells of phase (py, (j*dw) % sw) shifted left by
// (j*dw) / sw columns; the planes of one py are in order (j, g4), padded with unused planes to a
// multiple of 16, so that the rows of an AMX tile (16 planes at the same position) are evenly
// spaced. Step s = chunk of 16 planes of kernel row i: s = i * chunks + c, reading tile rows at
// q*4 + off[s] + r * plane_pos*4.
struct ConvGeometry {
  int64_t cg = 0, cg4 = 0;                      // channels per group, and in groups of 4
  int64_t kh = 0, kw = 0, sh = 0, sw = 0, dh = 0, dw = 0, pt = 0, pl = 0;
  int64_t h = 0, w = 0, oh = 0, ow = 0;
  // Folded layout (fold > 0: a one-channel input, the conv's kernel width fold <= 4): cell (row t,
  // column u) of phase plane py holds the fold input columns u*fold_sw + j*fold_dw - fold_pl
  // (j < fold) of input row t*sh + py - pt, so a kernel row is one step of 4 bytes instead of kw
  // steps with 3 padding bytes each. The geometry is then that of the equivalent conv: cg = fold
  // channels (the kernel's columns), kernel kh x 1, sw = dw = 1, pl = 0, on rows of ow columns;
  // h and w stay the real input's.
  int64_t fold = 0, fold_sw = 1, fold_dw = 1, fold_pl = 0;
  int64_t ws = 0;         // columns of a phase plane: ow + ((kw-1)*dw)/sw
  int64_t row_max = 0;    // ((kh-1)*dh)/sh
  int64_t hs = 0;         // rows of a phase plane: oh + row_max
  int64_t phases = 0;     // sh*sw
  int64_t plane_pos = 0;  // cells per plane, with slack for the last vector's reads
  int64_t planes = 0;     // planes in the buffer
  bool expand = false;    // the expanded layout
  int64_t chunks = 0;     // expanded: chunks of 16 planes per kernel row, ceil(kw*cg4 / 16)
  int64_t steps = 0;      // cells: cg4 * kh * kw steps of 4 channels; expanded: kh * chunks
  int64_t vectors = 0;    // vectors covering the output plane
  bool row_mode = false;  // vectors stay within a row (else they run over flat positions)
  size_t buf_bytes = 0;   // planes * plane_pos * 4
  const int32_t* off = nullptr;     // [steps] byte offset of each step's cell for q = 0
  const int32_t* vstart = nullptr;  // [vectors] first flat position of each vector
  const int32_t* vseg = nullptr;    // [vectors + 1] each vector's segments: seg[vseg[v] .. vseg[v+1])
  const ConvSegment* seg = nullptr;
};

struct ConvTask {
  const ConvGeometry* g = nullptr;
  const uint8_t* x = nullptr;  // codes of this sample and group: channel plane 0, (H, W) each
  int64_t v0 = 0, v1 = 0;      // conv: vectors [v0, v1) ...
  int64_t b0 = 0, b1 = 0;      // ... of output-channel blocks [b0, b1)
  uint8_t pad_code = 0;        // zp - act_offset
  uint8_t act_offset = 0;
  const int8_t* w = nullptr;   // this group's packed weights: [ceil(og/B)][steps][B*4], B = conv_block
  const int32_t* init = nullptr;  // this group's accumulator start values, [ceil(og/B)*B]
  float x_scale = 0;
  const float* w_scale = nullptr;  // this group's [og]
  const float* bias = nullptr;     // this group's [og]
  int64_t og = 0;
  bool relu = false;    // after the residual, when there is one
  bool safe16 = false;  // 2 * max code * max |w| <= 32767: u8 x s8 pair sums fit int16 (AVX2)
  // How many steps' pair sums can be added in int16 (AVX2): 4 when 8 * max code * max |w| <=
  // 32767, 2 when 4 * max code * max |w| is, else 1.
  int sum16 = 1;
  // How many steps of 4 channels can be summed in int16 lanes by 8-bit multiplies (neon: codes
  // of at most 7 bits, so they are int8, and 4 * steps16 * max code * max |w| <= 32767; the
  // partial sums are exact there and added into int32 after each run of steps16 steps); 0: not.
  int64_t steps16 = 0;
  // y = float(acc) * (x_scale * w_scale[o]); y = y + bias[o]; [y = y + residual]; [relu]
  const float* residual = nullptr;  // same layout as y, or nullptr
  float* y = nullptr;   // output of this sample, first channel of the group, row 0: (og, oh, ow)
  uint8_t* buf = nullptr;  // the re-laid-out input, g->buf_bytes
  // relayout fills rows [row0, row1) of every plane of buf (row1 = hs: and the slack after the
  // last row); a single image split into bands of output rows fills each band's own rows.
  int64_t row0 = 0, row1 = 0;
};

// ------------------------------------------------------------------------------ depthwise conv
// A conv with one input channel per group (group = C, any number `mult` of output channels per
// group), for output channels [o0, o1) of one sample. Each input channel's codes minus the zero
// point are converted to float32 straight into its sh*sw stride-phase planes of hs x ws values
// (the planes of ConvGeometry with one channel; positions outside the input are 0, written once
// per task), then each block of
// kDepthwiseBlock flat output positions (q = y * ws + x) sums w[tap] * plane[q + tap_off[tap]]
// over the taps in float32: every product and partial sum is an integer of magnitude at most
// kh*kw*255*wmax, which the op takes this path for only when that is below 2^24, so each float32
// operation is exact and the sum equals the reference's integer accumulator. The epilogue is the
// conv's (float(acc) * (x_scale * w_scale[o]), + bias, [+ residual], [ReLU]).
constexpr int64_t kDepthwiseBlock = 128;  // flat positions per block, at most
constexpr int64_t kDepthwiseSmall = 64;   // planes of at most this many flat positions ...
constexpr int64_t kDepthwiseSlots = 8;    // ... are done up to this many channels at a time

struct DepthwiseTask {
  const uint8_t* x = nullptr;      // codes of one sample, (C, H, W)
  const uint8_t* x_end = nullptr;  // one past them: the kernel reads no code at or past it
  int64_t h = 0, w = 0, oh = 0, ow = 0, kh = 0, kw = 0, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  // The layout (set by the op): ws = ow + (kw-1)*dw/sw, hs = oh + (kh-1)*dh/sh, each plane psize
  // floats (hs*ws, then zeros for the reads of the last block), nq = oh*ws flat positions (the
  // kernel computes them in blocks of up to kDepthwiseBlock, the last one past nq).
  int64_t ws = 0, hs = 0, psize = 0, nq = 0;
  const int64_t* tap_off = nullptr;  // [kh*kw] tap (i, j): its plane * psize + (i*dh/sh)*ws + j*dw/sw
  int64_t mult = 1;            // output channels per input channel
  int64_t o0 = 0, o1 = 0;      // output channels [o0, o1)
  int zero_point = 0;
  const float* wf = nullptr;   // [O][kh*kw] the integer weights, as float32
  // The same as int16, in blocks of kDepthwiseLanesMax channels: [ceil(O/16)][kh*kw][16], zero past O.
  const int16_t* w16 = nullptr;
  float x_scale = 0;
  const float* w_scale = nullptr;   // [O]
  const float* bias = nullptr;      // [O]
  bool relu = false;                // after the residual, when there is one
  const float* residual = nullptr;  // (O, OH, OW) of this sample, or nullptr
  float* y = nullptr;               // (O, OH, OW) of this sample
  // The channel-vectorized kernel (below) when tile_h > 0 and the path has one: the padded input
  // of one vector of channels is tile_h x tile_w positions (set by the op for mult == 1 and
  // small planes, see depthwise_tile).
  int64_t tile_h = 0, tile_w = 0;
  // kh*kw * max |code - zero_point| * max |w| <= 32767: every partial sum fits int16, and a path
  // may run the plane kernel in int16 lanes (simd_impl.h DwInt16) instead of float32.
  bool int16 = false;
  // Scratch, 64-byte aligned: slots * sh*sw*psize floats of planes (slots = kDepthwiseSlots when
  // nq <= kDepthwiseSmall, else 1), then nq rounded up to kDepthwiseBlock plus kDepthwiseSlots *
  // kDepthwiseSmall floats of accumulators; with tile_h > 0 at least depthwise_tile_floats.
  float* buf = nullptr;
};

// The channel-vectorized depthwise kernel (simd_impl.h depthwise_channels), for small planes of
// a conv with one output channel per input channel: each vector holds kDepthwiseLanesMax or fewer
// channels of one position, so a 4x4 plane costs 16 x taps multiply-adds per vector of channels
// instead of whole rows of padded positions per channel. Used for output planes of at most
// kDepthwiseTilePlane positions whose padded input has at most kDepthwiseTileMax positions.
constexpr int64_t kDepthwiseLanesMax = 16;
constexpr int64_t kDepthwiseTilePlane = 256;
constexpr int64_t kDepthwiseTileMax = 1156;  // 34 x 34: a stride-2 conv from 32 x 32 (0.85x its time)
constexpr int64_t kDepthwiseTileTaps = 64;  // kernels of at most 8x8

// The padded input's rows and columns (0, 0 when the kernel does not apply).
inline void depthwise_tile(int64_t mult, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pl, int64_t* th,
                           int64_t* tw) {
  *th = 0, *tw = 0;
  if (mult != 1 || oh * ow > kDepthwiseTilePlane || oh <= 0 || ow <= 0 || kh * kw > kDepthwiseTileTaps) return;
  const int64_t rows = (oh - 1) * sh + (kh - 1) * dh + 1, cols = (ow - 1) * sw + (kw - 1) * dw + 1;
  const int64_t hh = rows > pt + h ? rows : pt + h, ww = cols > pl + w ? cols : pl + w;
  if (hh * ww > kDepthwiseTileMax) return;
  *th = hh, *tw = ww;
}

// Scratch floats of the channel-vectorized kernel: the tile and the weights (its sums stay in
// registers).
inline int64_t depthwise_tile_floats(int64_t th, int64_t tw, int64_t taps) {
  return (th * tw + taps) * kDepthwiseLanesMax;
}

// ------------------------------------------------------------------------------ gemm
struct GemmTask {
  const uint8_t* x = nullptr;  // (N, k) codes
  int64_t k = 0, kp = 0;       // K and K padded to a multiple of 4
  int64_t n0 = 0, n1 = 0;      // samples [n0, n1)
  int64_t o = 0;               // output channels
  int64_t b0 = 0, b1 = 0;      // output-channel blocks [b0, b1) of SimdKernels::gemm_block
  uint8_t act_offset = 0;
  const int8_t* w = nullptr;      // packed: [ceil(o/gb)][kp/4][gb][4]
  const int32_t* init = nullptr;  // [ceil(o/gb)*gb]
  const float* x_scale = nullptr;
  bool x_scale_per_sample = false;
  const float* w_scale = nullptr;  // [o]
  const float* bias = nullptr;     // [o]
  bool relu = false;
  bool safe16 = false;
  float* y = nullptr;        // (N, o)
  uint8_t* buf = nullptr;    // (n1 - n0) * kp bytes of scratch
};

// ------------------------------------------------------------------------------ dispatch
struct SimdKernels {
  Isa isa = Isa::kScalar;
  int conv_lanes = 0;    // output positions per vector (slack of the phase planes)
  int gemm_block = 0;    // output channels per gemm weight block
  bool s8_acts = false;  // signed x signed dot product: 8-bit codes are stored minus 128
  // relayout fills task.buf from task.x; conv computes the task's vectors and channel blocks
  // from task.buf. nullptr: the portable conv (qconv.cc).
  void (*relayout)(const ConvTask&) = nullptr;
  void (*conv)(const ConvTask&) = nullptr;
  void (*gemm)(const GemmTask&) = nullptr;  // nullptr: the portable gemm (qgemm.cc)
  // out[c] = the float64 sequential mean of plane c (docs/ops.md, AsqQuantize step 1).
  void (*plane_means)(const float* x, size_t channels, size_t plane, double* out) = nullptr;
  // y[i] = clamp(rint(x[i] / scale), lo, hi) + zero_point, float32 division semantics.
  void (*quantize)(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q) = nullptr;
  // The largest of count codes (0 for count 0).
  uint8_t (*max_code)(const uint8_t* x, size_t count) = nullptr;
  // The conv's data layout: output channels per packed weight block (8: [steps][8][4] blocks;
  // 16: AMX tiles [chunks][16][64]), whether the input planes are expanded per kernel column
  // (see ConvGeometry), and how many vectors the conv handles together (task granularity).
  int conv_block = kConvBlock;
  bool conv_expand = false;
  int conv_group = 2;
  // Relative speed of the conv's dot products (multiply-adds per unit of time, 1 for the VNNI
  // class): a single image is split into tasks of at least this many times the base task size,
  // so that a task stays long against the thread pool's cost per task.
  int conv_speed = 1;
  // The depthwise conv (DepthwiseTask); nullptr: the grouped conv of the paths above.
  void (*depthwise)(const DepthwiseTask&) = nullptr;
  // A single image's conv, depthwise conv and quantizer are split over threads from a size
  // divided by 2^parallel_shift (qconv.cc: the sizes measured on a Xeon with AMX, shift 0). avx2:
  // 3, measured on a 2-core AMD EPYC (Zen 3), where a 2.4M multiply-add conv takes ~80 us and
  // splitting it pays (ResNet-20, batch 1, 2 threads: 0.83-0.86x the time of shift 0; the Fashion-MNIST
  // CNN 0.82-0.86x; MobileNetV2 CIFAR 0.80-0.87x; shifts 2-4 were within noise of each other).
  // avx512vnni: 3, measured on a 2-core AMD EPYC (Zen 4; batch 1, 2 threads, against shift 0, 16
  // rounds of alternating processes in both orders): MobileNetV2 CIFAR ~0.93x, MobileNetV2@224
  // ~0.92x, ResNet-20 ~0.94x, the CNN and ResNet-18 unchanged. amx keeps 0 (its own table).
  int parallel_shift = 0;
};

// The kernels of a path; nullptr when the path is not compiled into this library. The scalar
// path always exists (its conv and gemm are nullptr: the ops' own portable code).
const SimdKernels* simd_kernels(Isa isa) noexcept;

// The path whose code a table runs for each part of an op (what PathTrace reports): a path may
// lack a kernel of its own. conv: k.isa, or scalar when k.conv is nullptr; gemm: scalar when
// k.gemm is nullptr (scalar, neon), avx512vnni in the amx table; means and quantizer (they
// always come from the same path): scalar for the portable ones (the scalar table), avx512vnni
// in the amx table.
Isa conv_path(const SimdKernels& k) noexcept;
Isa gemm_path(const SimdKernels& k) noexcept;
Isa vector_path(const SimdKernels& k) noexcept;
Isa depthwise_path(const SimdKernels& k) noexcept;

// Reports (QEXPORT_KERNEL_TRACE) that a kernel of table k ran `path`, one of the above: the
// reason is kNotInPath when that is not k's own path.
inline void trace_part(PathTrace& trace, const SimdKernels& k, Isa path) noexcept {
  trace.ran(k.isa, path, path == k.isa ? nullptr : kNotInPath);
}

// The act_offset a path uses for codes of `act_bits` bits.
inline uint8_t act_offset_for(const SimdKernels& k, int act_bits) {
  return (k.s8_acts && act_bits == 8) ? 128 : 0;
}

// Defined in the ISA files (only those compiled for the target).
const SimdKernels* simd_kernels_avx2() noexcept;
const SimdKernels* simd_kernels_avx512vnni() noexcept;
const SimdKernels* simd_kernels_amx() noexcept;  // conv only; simd_kernels() adds the avx512vnni rest
const SimdKernels* simd_kernels_neon() noexcept;
const SimdKernels* simd_kernels_dotprod() noexcept;

// Combines the 8 lanes of a plane mean (docs/ops.md): ((l0 + l4) + (l2 + l6)) + ((l1 + l5) +
// (l3 + l7)), divided by the count: the halving reduction of one 8-wide register.
inline double mean_of_lanes(const double* l, size_t count) {
  const double t0 = l[0] + l[4], t1 = l[1] + l[5], t2 = l[2] + l[6], t3 = l[3] + l[7];
  return ((t0 + t2) + (t1 + t3)) / static_cast<double>(count);
}

// The portable versions (also the reference for the others).
void plane_means_portable(const float* x, size_t channels, size_t plane, double* out);
void depthwise_portable(const DepthwiseTask& t);
void quantize_portable(const float* x, uint8_t* y, size_t count, float scale, const QuantParams& q);
uint8_t max_code_portable(const uint8_t* x, size_t count);

}  // namespace qexport
