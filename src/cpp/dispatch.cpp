#include "dispatch.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace fastnn {

namespace {

// One table per level, its entries the level's kernels: level##_table::isa is
// the level's namespace, and qualified lookup finds each kernel there.
#define FASTNN_TABLE_ENTRY(kernel, Args, Return) , {&isa::kernel<float>, &isa::kernel<double>}
#define FASTNN_ISA_TABLE(level)                                          \
  namespace level##_table {                                              \
  namespace isa = ::fastnn::level;                                       \
  constexpr IsaKernels kTable{#level FASTNN_KERNELS(FASTNN_TABLE_ENTRY)}; \
  }
FASTNN_ISAS(FASTNN_ISA_TABLE)
#define FASTNN_TABLE_OF(level) level##_table::kTable,
const IsaKernels kTables[] = {FASTNN_ISAS(FASTNN_TABLE_OF)};
constexpr int kLevels = sizeof(kTables) / sizeof(kTables[0]);

// CPUID leaf 7 subleaf 1, EAX bit 5.
bool cpu_has_avx512_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5)) != 0;
}

// AVX-512 needs both CPU support and the OS saving zmm state; GCC's
// __builtin_cpu_supports checks CPUID and XGETBV for us (and the bf16 level
// builds on that check).
Isa detect_cpu_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return cpu_has_avx512_bf16() ? Isa::avx512_bf16 : Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::generic;
}

// FASTNN_ISA only lowers the level: asking for AVX-512 on an AVX2 machine gives AVX2.
// An unknown value is ignored here; the Python layer warns about it.
Isa pick_isa() {
  Isa best = detect_cpu_isa();
  const char* cap = std::getenv("FASTNN_ISA");
  if (cap == nullptr) return best;
  Isa wanted = best;
  for (int level = 0; level < kLevels; ++level)
    if (std::strcmp(cap, kTables[level].name) == 0) wanted = static_cast<Isa>(level);
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect_cpu_isa();
  return isa;
}

Isa active_isa() {
  static const Isa isa = pick_isa();
  return isa;
}

const IsaKernels& isa_kernels() { return kTables[static_cast<int>(active_isa())]; }

const char* isa_name(Isa isa) { return kTables[static_cast<int>(isa)].name; }

namespace {
std::atomic<int> g_matmul_precision{static_cast<int>(MatmulPrecision::highest)};
}  // namespace

MatmulPrecision matmul_precision() {
  return static_cast<MatmulPrecision>(g_matmul_precision.load(std::memory_order_relaxed));
}

void set_matmul_precision(MatmulPrecision p) {
  g_matmul_precision.store(static_cast<int>(p), std::memory_order_relaxed);
}

bool has_bf16() { return active_isa() == Isa::avx512_bf16; }

bool bf16_matmuls() { return has_bf16() && matmul_precision() == MatmulPrecision::medium; }

}  // namespace fastnn
