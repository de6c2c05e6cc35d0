#include "dispatch.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>


namespace fastnn {

namespace {

#define FASTNN_ISA_TABLE(ns)                                                                             \
  IsaKernels{#ns, ns::gemm_f32, ns::gemm_f64, ns::elementwise_f32, ns::elementwise_f64, ns::softmax_f32,   \
             ns::softmax_f64, ns::cross_entropy_f32, ns::cross_entropy_f64, ns::block_sparse_rows_f32,     \
             ns::block_sparse_columns_f32, ns::sparse_matmul_f32, ns::block_sparse_rows_f64,               \
             ns::block_sparse_columns_f64, ns::sparse_matmul_f64, ns::sgd_step_f32, ns::adagrad_step_f32,  \
             ns::rmsprop_step_f32, ns::adam_step_f32, ns::sgd_step_f64, ns::adagrad_step_f64,              \
             ns::rmsprop_step_f64, ns::adam_step_f64, nullptr}

// The avx512 table whose float32 GEMM also has a bf16 form: everything else,
// float32 "highest" included, is the avx512 code itself.
constexpr IsaKernels with_bf16_gemm(IsaKernels t) {
  t.name = "avx512_bf16";
  t.gemm_bf16 = avx512_bf16::gemm_bf16;
  return t;
}

const IsaKernels kTables[] = {FASTNN_ISA_TABLE(generic), FASTNN_ISA_TABLE(avx2), FASTNN_ISA_TABLE(avx512),
                              with_bf16_gemm(FASTNN_ISA_TABLE(avx512))};

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
  if (std::strcmp(cap, "generic") == 0) wanted = Isa::generic;
  else if (std::strcmp(cap, "avx2") == 0) wanted = Isa::avx2;
  else if (std::strcmp(cap, "avx512") == 0) wanted = Isa::avx512;
  else if (std::strcmp(cap, "avx512_bf16") == 0) wanted = Isa::avx512_bf16;
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

}  // namespace fastnn
