// Run-time detection and selection of the kernels' instruction-set paths (include/qexport/isa.h).
#include "qexport/isa.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "qexport/common.h"
#include "qexport/simd.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace qexport {

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512Vnni: return "avx512vnni";
    case Isa::kAmx: return "amx";
    case Isa::kNeon: return "neon";
    case Isa::kDotprod: return "dotprod";
  }
  return "?";
}

namespace {

constexpr Isa kAll[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kAmx, Isa::kNeon, Isa::kDotprod};

#if (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
// AMX-TILE and AMX-INT8 (CPUID.(7,0):EDX bits 24 and 25), and the tile data state enabled for
// this process: Linux enables it on request (arch_prctl ARCH_REQ_XCOMP_PERM, once per process).
bool amx_usable() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}
#else
[[maybe_unused]] bool amx_usable() noexcept { return false; }
#endif

bool cpu_supports(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__) || defined(__i386__)
    // __builtin_cpu_supports also checks that the OS saves the YMM/ZMM state (XGETBV).
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") != 0;
    case Isa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
    case Isa::kAmx: {
      static const bool ok = cpu_supports(Isa::kAvx512Vnni) && amx_usable();
      return ok;
    }
#elif defined(__aarch64__) && defined(__linux__)
    case Isa::kNeon: return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
    case Isa::kDotprod: return (getauxval(AT_HWCAP) & HWCAP_ASIMD) && (getauxval(AT_HWCAP) & HWCAP_ASIMDDP);
#elif defined(__aarch64__)
    case Isa::kNeon: return true;  // Advanced SIMD is mandatory on ARMv8-A
#endif
    default: return false;
  }
}

}  // namespace

bool isa_available(Isa isa) noexcept {
  if (isa == Isa::kScalar) return true;
  return cpu_supports(isa) && simd_kernels(isa) != nullptr;  // the CPU first: no table of a missing ISA is built
}

Isa best_isa() noexcept {
  static const Isa best = [] {
    Isa b = Isa::kScalar;
    for (Isa isa : kAll)
      if (isa_available(isa)) b = isa;  // kAll is ordered slowest first within each architecture
    return b;
  }();
  return best;
}

std::string available_isas() {
  std::string s;
  for (Isa isa : kAll) {
    if (!isa_available(isa)) continue;
    if (!s.empty()) s += ',';
    s += isa_name(isa);
  }
  return s;
}

Isa select_isa(const char* op) {
  const char* env = std::getenv(kIsaEnv);
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return best_isa();
  for (Isa isa : kAll) {
    if (std::strcmp(env, isa_name(isa)) != 0) continue;
    if (!isa_available(isa))
      invalid(op, kIsaEnv, "='", env, "' is not available on this CPU/build (available: ", available_isas(), ")");
    return isa;
  }
  invalid(op, kIsaEnv, "='", env, "' is not a kernel path (expected auto or one of: scalar, avx2, avx512vnni, amx, ",
          "neon, dotprod; available here: ", available_isas(), ")");
}

PathTrace::PathTrace(const char* op, std::string node) : op_(op), node_(std::move(node)) {
  const char* env = std::getenv(kTraceEnv);
  enabled_ = env != nullptr && std::strcmp(env, "1") == 0;
}

void PathTrace::write(Isa selected, Isa path, const char* reason) const noexcept {
  // One fprintf call: stdio locks the stream, so concurrent kernels never interleave a line.
  std::fprintf(stderr, "qexport: %s %s path=%s selected=%s%s%s\n", node_.empty() ? "-" : node_.c_str(), op_,
               isa_name(path), isa_name(selected), reason != nullptr ? " reason=" : "", reason != nullptr ? reason : "");
}

}  // namespace qexport
