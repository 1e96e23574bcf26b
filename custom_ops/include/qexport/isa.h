// Instruction-set paths of the kernels and their run-time selection.
//
// Every kernel picks one path when ONNX Runtime creates it (at session creation):
//   * the environment variable QEXPORT_KERNEL_ISA, when set and not empty or "auto", names it
//     ("scalar", "avx2", "avx512vnni", "amx" on x86-64; "scalar", "neon", "dotprod" on aarch64). A name
//     this build or this CPU does not support is an error at session creation, so a test that
//     forces a path never silently runs another one;
//   * otherwise the best path the CPU supports (best_isa()).
// "scalar" is the portable C++ code (compiler-vectorized for the baseline ISA), always present.
//
// A path may lack a kernel of its own for some part of an op (the amx path has only a conv; neon
// has no gemm; the ARM paths use the portable means and quantizer), and an op whose overflow bound
// needs int64 accumulators runs the portable code on every path. Such a kernel still runs, but
// never silently: with QEXPORT_KERNEL_TRACE=1 every kernel reports the code it ran (PathTrace).
#pragma once

#include <atomic>
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

inline constexpr const char* kTraceEnv = "QEXPORT_KERNEL_TRACE";

// Why a kernel ran another path than the selected one (PathTrace::ran).
inline constexpr const char* kNotInPath = "not_in_path";            // the selected path has no kernel for it
inline constexpr const char* kInt64Acc = "int64_accumulator";       // the overflow bound needs int64 sums
inline constexpr const char* kInputTooLarge = "input_too_large";    // the SIMD conv's re-laid-out input would
                                                                    // exceed its 32-bit offsets
inline constexpr const char* kDepthwise = "depthwise";  // a depthwise conv: the path's depthwise kernel
                                                        // (reported whenever it runs; amx: avx512vnni's)

// The kernel-path report (docs/ops.md, "Kernel paths"). When QEXPORT_KERNEL_TRACE=1 at kernel
// creation (read then, like QEXPORT_KERNEL_ISA), the first Compute that runs a given path writes
// one line to stderr:
//   qexport: <node> <op> path=<path run> selected=<path selected>[ reason=<why they differ>]
// (<node> is "-" for an unnamed node). At most one line per kernel and path, safe from any thread.
class PathTrace {
 public:
  PathTrace(const char* op, std::string node);
  PathTrace(const PathTrace&) = delete;
  PathTrace& operator=(const PathTrace&) = delete;

  // This Compute runs `path` of a kernel created for `selected`; `reason` (one of the k* reasons
  // above) when the two differ.
  void ran(Isa selected, Isa path, const char* reason = nullptr) noexcept {
    if (!enabled_) return;
    const unsigned bit = 1u << static_cast<int>(path);
    if (seen_.fetch_or(bit, std::memory_order_relaxed) & bit) return;
    write(selected, path, reason);
  }

 private:
  void write(Isa selected, Isa path, const char* reason) const noexcept;

  const char* op_;
  std::string node_;
  bool enabled_;
  std::atomic<unsigned> seen_{0};
};

}  // namespace qexport
