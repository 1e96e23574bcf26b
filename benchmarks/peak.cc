// Per-core peak throughput of the instructions the kernels rely on, for the roofline of
// docs/performance.md. benchmarks/bench.py compiles it (g++ -O2 -march=native) and runs it.
// Prints one JSON object: GMAC/s (or GFMA/s) per instruction, with independent accumulators
// in registers (no memory traffic), on one thread. x86-64 only.
#include <chrono>
#include <cstdio>

#if defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace {

constexpr long kIters = 20000000;

template <typename F>
double rate(F&& body, double macs_per_iter) {
  body(kIters / 10);  // warm up (frequency, caches)
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    body(kIters);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double r = kIters * macs_per_iter / dt / 1e9;
    best = r > best ? r : best;
  }
  return best;
}

#define QX_12(op, reg) \
  op " %%" reg "0,%%" reg "0,%%" reg "1\n" op " %%" reg "0,%%" reg "0,%%" reg "2\n" op " %%" reg "0,%%" reg "0,%%" reg "3\n" \
  op " %%" reg "0,%%" reg "0,%%" reg "4\n" op " %%" reg "0,%%" reg "0,%%" reg "5\n" op " %%" reg "0,%%" reg "0,%%" reg "6\n" \
  op " %%" reg "0,%%" reg "0,%%" reg "7\n" op " %%" reg "0,%%" reg "0,%%" reg "8\n" op " %%" reg "0,%%" reg "0,%%" reg "9\n" \
  op " %%" reg "0,%%" reg "0,%%" reg "10\n" op " %%" reg "0,%%" reg "0,%%" reg "11\n" op " %%" reg "0,%%" reg "0,%%" reg "12\n"
#define QX_LOOP(body)                                                                                       \
  [](long n) {                                                                                              \
    __asm__ volatile("mov %0, %%rcx\n1:\n" body "dec %%rcx\njnz 1b\n" ::"r"(n)                              \
                     : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
                       "xmm10", "xmm11", "xmm12", "memory");                                                 \
  }

struct alignas(64) TileConfig {
  uint8_t palette_id, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

}  // namespace

int main() {
  __builtin_cpu_init();
  std::printf("{");
  const char* sep = "";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    std::printf("%s\"fp32_fma_ymm_gflops_mac\": %.1f", sep, rate(QX_LOOP(QX_12("vfmadd231ps", "ymm")), 12 * 8));
    sep = ", ";
    std::printf("%s\"int16_vpmaddwd_ymm_gmacs\": %.1f", sep, rate(QX_LOOP(QX_12("vpmaddwd", "ymm")), 12 * 16));
  }
  if (__builtin_cpu_supports("avx512f")) {
    std::printf("%s\"fp32_fma_zmm_gflops_mac\": %.1f", sep, rate(QX_LOOP(QX_12("vfmadd231ps", "zmm")), 12 * 16));
    sep = ", ";
  }
  if (__builtin_cpu_supports("avx512bw"))
    std::printf("%s\"int16_vpmaddwd_zmm_gmacs\": %.1f", sep, rate(QX_LOOP(QX_12("vpmaddwd", "zmm")), 12 * 32));
  if (__builtin_cpu_supports("avx2"))
    std::printf("%s\"int8_vpmaddubsw_ymm_gmacs\": %.1f", sep, rate(QX_LOOP(QX_12("vpmaddubsw", "ymm")), 12 * 32));
  if (__builtin_cpu_supports("avx512vnni")) {
    std::printf("%s\"int8_vpdpbusd_zmm_gmacs\": %.1f", sep, rate(QX_LOOP(QX_12("vpdpbusd", "zmm")), 12 * 64));
    std::printf("%s\"int8_vpdpbusd_ymm_gmacs\": %.1f", sep, rate(QX_LOOP(QX_12("vpdpbusd", "ymm")), 12 * 32));
  }
  unsigned a = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  const bool amx = (d & (1u << 24)) && (d & (1u << 25)) && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  if (amx) {
    TileConfig cfg{};
    cfg.palette_id = 1;
    for (int i = 0; i < 8; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 64;
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
    auto body = [](long n) {
      __asm__ volatile(
          "tilezero %%tmm0\ntilezero %%tmm1\ntilezero %%tmm2\ntilezero %%tmm3\n"
          "tilezero %%tmm4\ntilezero %%tmm5\ntilezero %%tmm6\ntilezero %%tmm7\n"
          "mov %0, %%rcx\n1:\n"
          "tdpbsud %%tmm6,%%tmm4,%%tmm0\ntdpbsud %%tmm7,%%tmm4,%%tmm1\n"
          "tdpbsud %%tmm6,%%tmm5,%%tmm2\ntdpbsud %%tmm7,%%tmm5,%%tmm3\n"
          "dec %%rcx\njnz 1b\n" ::"r"(n / 8)
          : "rcx", "memory");
    };
    std::printf("%s\"int8_amx_tdpbsud_gmacs\": %.1f", sep, rate(body, 4 * 16 * 16 * 64 / 8.0));
    __asm__ volatile("tilerelease");
  }
  std::printf("}\n");
  return 0;
}
#else
int main() {
  std::printf("{}\n");
  return 0;
}
#endif
