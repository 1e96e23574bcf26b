// The parts of the activation quantizers shared by AsqQuantize / LsqQuantize (quantize.cc) and
// the fused conv ops (qconv.cc): attributes, adapter checks, and ASQ's per-sample step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/simd.h"

namespace qexport {

// Reads and checks the attributes <prefix>bits, <prefix>signed, <prefix>step, and the optional
// <prefix>beta_map ("relu" | "sigmoid2", default "sigmoid2": files written before it existed)
// and <prefix>groups (>= 0, default 0).
QuantParams read_quant_params(const OrtKernelInfo* info, const char* op, const std::string& prefix = "");

// Checks the adapter shapes W1 (H, G), B1 (H,), W2 (1, H), B2 (1,) (names: the inputs' names in
// the op, e.g. {"W1", "B1", "W2", "B2"}), G = groups, or C when groups is 0, and 1 <= groups <= C;
// c < 0 (not known yet) skips the checks that need C. groups_name: the attribute's name in the op
// ("groups", or "q_groups" in a fused conv), for the messages.
void check_adapters(const char* op, const char* const names[4], const std::vector<int64_t>& w1,
                    const std::vector<int64_t>& b1, const std::vector<int64_t>& w2, const std::vector<int64_t>& b2,
                    int64_t c, int64_t groups, const char* groups_name);

// Steps 2-6 of AsqQuantize (docs/ops.md) from the pooled means p[0..c): the group means, float64
// sums in the defined order, beta by q.beta_relu, scale = float32(q.step * beta).
float asq_scale(const double* p, int64_t c, const float* w1, const float* b1, const float* w2, float b2, int64_t h,
                const QuantParams& q);

}  // namespace qexport
