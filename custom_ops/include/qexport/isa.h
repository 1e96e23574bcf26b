// Instruction-set paths of the kernels and their run-time selection.
//
// Every kernel picks one path when ONNX Runtime creates it (at session creation):
//   * the environment variable QEXPORT_KERNEL_ISA, when set and not empty or "auto", names it
//     ("scalar", "avx2", "avx512vnni", "amx" on x86-64; "scalar", "neon", "dotprod" on aarch64). A name
//     this build or this CPU does not support is an error at session creation, so a test that
//     forces a path never silently runs another one;
//   * otherwise the best path the CPU supports (best_isa()).
// "scalar" is the portable C++ code (compiler-vectorized for the baseline ISA), always present.
#pragma once

#include <string>

namespace qexport {

// kAmx: AVX-512 plus the AMX tile unit (TDPBSUD) for the conv's dot products; the other kernels
// of that path are the avx512vnni ones.
enum class Isa : int { kScalar = 0, kAvx2, kAvx512Vnni, kAmx, kNeon, kDotprod };

inline constexpr const char* kIsaEnv = "QEXPORT_KERNEL_ISA";

const char* isa_name(Isa isa) noexcept;

// Compiled into this library and supported by this CPU (and OS).
bool isa_available(Isa isa) noexcept;

// The fastest available path.
Isa best_isa() noexcept;

// "scalar,avx2,avx512vnni,amx": every available path, slowest first.
std::string available_isas();

// The path a kernel of `op` uses: QEXPORT_KERNEL_ISA or best_isa(). Throws an OpError
// (ORT_INVALID_ARGUMENT, message naming the op and the variable) for an unknown or
// unavailable name.
Isa select_isa(const char* op);

}  // namespace qexport
