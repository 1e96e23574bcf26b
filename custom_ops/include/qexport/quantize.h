// The parts of the activation quantizers shared by AsqQuantize / LsqQuantize (quantize.cc) and
// the fused conv ops (qconv.cc): attributes, adapter checks, and ASQ's per-sample step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qexport/common.h"
#include "qexport/simd.h"

namespace qexport {

// Reads and checks the attributes <prefix>bits, <prefix>signed, <prefix>step.
QuantParams read_quant_params(const OrtKernelInfo* info, const char* op, const std::string& prefix = "");

// Checks the adapter shapes W1 (H, C), B1 (H,), W2 (1, H), B2 (1,) (names: the inputs' names in
// the op, e.g. {"W1", "B1", "W2", "B2"}); c < 0 skips the C check.
void check_adapters(const char* op, const char* const names[4], const std::vector<int64_t>& w1,
                    const std::vector<int64_t>& b1, const std::vector<int64_t>& w2, const std::vector<int64_t>& b2,
                    int64_t c);

// Steps 2-5 of AsqQuantize (docs/ops.md) from the pooled means p[0..c): float64 sums in the
// defined order, beta = 2 / (1 + exp(-z)), scale = float32(step * beta).
float asq_scale(const double* p, int64_t c, const float* w1, const float* b1, const float* w2, float b2, int64_t h,
                float step);

}  // namespace qexport
