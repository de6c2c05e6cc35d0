// Run-time instruction-set dispatch.
//
// Kernels whose speed depends on vector width (GEMM, the softmax family) are
// compiled once per instruction set, each copy in its own namespace
// fastnn::<isa> (see FASTNN_ISA_SOURCES in CMakeLists.txt). At first use the best
// set this CPU supports is picked, capped by the FASTNN_ISA environment variable
// (avx512_bf16 | avx512 | avx2 | generic), and every call goes through that table.
// avx512_bf16 is the avx512 table plus a GEMM on bfloat16 panels, which float32
// matmuls take in "medium" precision (set_matmul_precision).
#pragma once
#include "common.h"

namespace fastnn {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };

// C[M,N] = act(op(A)[M,K] @ op(B)[K,N] + (accumulate ? C : 0) + bias[N])
// op(A) is A (M,K) with row stride lda, or, with trans_a, A stored as (K,M).
// op(B) is B (K,N) with row stride ldb, or, with trans_b, B stored as (N,K).
// bias may be null; act is applied after the bias. C has row stride ldc.
template <class T>
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  index_t M = 0, N = 0, K = 0;
  const T* A = nullptr; index_t lda = 0;
  const T* B = nullptr; index_t ldb = 0;
  T* C = nullptr; index_t ldc = 0;
  bool accumulate = false;
  const T* bias = nullptr;
  Act act = Act::none;
  // With a gate (stored like C, row stride ldc; act must be none), C is
  // multiplied by gate_act' at the gate in the store: dx becomes the gradient
  // through the activation whose output the gate is, with no pass of its own.
  const T* gate = nullptr;
  Act gate_act = Act::none;
};

// Activation functions and their gradients: out (n,) = f(a) for the forward
// kinds, f(a, b) with b = dL/d(output) for the backward ones, whose a is the
// forward's output (relu, sigmoid, tanh) or input (leaky_relu, elu). param is
// leaky_relu's negative_slope or elu's alpha. out may be a or b itself.
enum class Elementwise : int {
  relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward,
  leaky_relu, leaky_relu_backward, elu, elu_backward
};
template <class T>
struct ElementwiseArgs {
  Elementwise kind;
  const T* a;
  const T* b;
  T* out;
  index_t n;
  T param;
};

// Row-wise softmax or log-softmax: x, y are (rows, cols), contiguous.
template <class T>
struct SoftmaxArgs {
  const T* x = nullptr;
  T* y = nullptr;
  index_t rows = 0, cols = 0;
  bool log = false;
};

// Cross-entropy from logits (rows, cols), one pass per row.
// The target is either labels (rows,) in [0, cols) or probabilities (rows, cols).
// With label smoothing s the target becomes (1 - s) * target + s / cols.
// row_loss (rows,) receives each row's loss if not null; dlogits (rows, cols)
// receives grad_scale * d(row loss)/d(logits) if not null.
// Returns the sum of the row losses (in double).
template <class T>
struct CrossEntropyArgs {
  const T* logits = nullptr;
  index_t rows = 0, cols = 0;
  const std::int64_t* labels = nullptr;
  const T* target = nullptr;
  double label_smoothing = 0.0;
  T* row_loss = nullptr;
  T* dlogits = nullptr;
  double grad_scale = 1.0;
};

// A mostly-zero matrix A (lines, depth) kept by blocks of kSparseBlockLines
// consecutive lines: block b lists the positions k (ascending) where any of its
// lines is nonzero, count[b] of them, at index[b * capacity + q]; line r of the
// block has its value there at value[(b * capacity + q) * kSparseBlockLines + r]
// (zeros included). Lines past the end of A in the last block are zeros.
constexpr int kSparseBlockLines = 4;
template <class T>
struct BlockSparse {
  index_t lines = 0;
  index_t capacity = 0;
  const index_t* count = nullptr;
  const std::int32_t* index = nullptr;
  const T* value = nullptr;
  index_t blocks() const { return (lines + kSparseBlockLines - 1) / kSparseBlockLines; }
};

// C (a.lines, n) = act(A @ B + bias) for a mostly-zero A, B (depth, n) with row
// stride n, bias (n,) or null: the products with A's zeros are mostly skipped.
// A linear layer's forward is x @ W with A = x (lines = x's rows); its weight
// gradient x^T @ dz is the same product with A = x^T (lines = x's columns).
template <class T>
struct SparseMatmulArgs {
  BlockSparse<T> a;
  const T* B = nullptr;
  const T* bias = nullptr;
  T* C = nullptr;
  index_t n = 0;
  Act act = Act::none;
  // Skipping A's zeros skips their 0 * B terms, which are only not 0 when B
  // holds an infinity or a NaN: with check_B_finite the product then returns
  // false, C unfinished, so that the dense product can give the NaNs.
  bool check_B_finite = false;
};

// Buffers a block_sparse_* builder fills: count (blocks), index (blocks *
// capacity), value (blocks * kSparseBlockLines * capacity).
template <class T>
struct BlockSparseBuffers {
  index_t* count;
  std::int32_t* index;
  T* value;
};

// Optimizer hyperparameters (torch.optim's names). step counts from 1 and is
// incremented by the caller before the call.
struct SgdHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, first_step;
};
struct AdagradHyper {
  double step, lr, lr_decay, weight_decay, eps;
  bool maximize;
};
struct RmspropHyper {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};
struct AdamHyper {
  double step, lr, beta1, beta2, eps, weight_decay;
  bool decoupled_weight_decay, maximize;
};

// In-place updates of one parameter (n elements) and its state; state arrays
// that an option does not use may be null (momentum_buf without momentum,
// grad_avg unless centered).
#define FASTNN_OPTIM_SIGNATURES(T, suffix)                                                                \
  void (*sgd_step_##suffix)(T* param, const T* grad, T* momentum_buf, index_t n, const SgdHyper&);         \
  void (*adagrad_step_##suffix)(T* param, const T* grad, T* state_sum, index_t n, const AdagradHyper&);    \
  void (*rmsprop_step_##suffix)(T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buf,     \
                                index_t n, const RmspropHyper&);                                          \
  void (*adam_step_##suffix)(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, index_t n, const AdamHyper&);

// block_sparse_rows / block_sparse_columns: x (rows, cols) as a BlockSparse
// whose lines are x's rows (capacity cols) or x's columns (capacity rows),
// unless it has more than max_entries entries: then they return false early.
#define FASTNN_SPARSE_SIGNATURES(T, suffix)                                                              \
  bool (*block_sparse_rows_##suffix)(const T* x, index_t rows, index_t cols, index_t max_entries,         \
                                     const BlockSparseBuffers<T>& out);                                   \
  bool (*block_sparse_columns_##suffix)(const T* x, index_t rows, index_t cols, index_t max_entries,      \
                                        const BlockSparseBuffers<T>& out);                                \
  bool (*sparse_matmul_##suffix)(const SparseMatmulArgs<T>&);

struct IsaKernels {
  const char* name;
  void (*gemm_f32)(const GemmArgs<float>&);
  void (*gemm_f64)(const GemmArgs<double>&);
  void (*elementwise_f32)(const ElementwiseArgs<float>&);
  void (*elementwise_f64)(const ElementwiseArgs<double>&);
  void (*softmax_f32)(const SoftmaxArgs<float>&);
  void (*softmax_f64)(const SoftmaxArgs<double>&);
  double (*cross_entropy_f32)(const CrossEntropyArgs<float>&);
  double (*cross_entropy_f64)(const CrossEntropyArgs<double>&);
  FASTNN_SPARSE_SIGNATURES(float, f32)
  FASTNN_SPARSE_SIGNATURES(double, f64)
  FASTNN_OPTIM_SIGNATURES(float, f32)
  FASTNN_OPTIM_SIGNATURES(double, f64)
  // float32 GEMM with inputs rounded to bf16, float32 accumulation; null
  // where the CPU (or the FASTNN_ISA cap) has no AVX512_BF16.
  void (*gemm_bf16)(const GemmArgs<float>&);
};

// The table picked for this process (CPUID capped by FASTNN_ISA), chosen once.
const IsaKernels& isa_kernels();
Isa active_isa();
const char* isa_name(Isa isa);
// Best instruction set this CPU supports, ignoring FASTNN_ISA.
Isa cpu_isa();

// torch.set_float32_matmul_precision's levels: "highest" is float32 math;
// "medium" lets float32 GEMMs round their inputs to bf16 (where the CPU has
// it); "high" is "highest" here, as nothing between the two pays on a CPU.
enum class MatmulPrecision : int { highest = 0, high = 1, medium = 2 };
// One process-wide setting, read by each GEMM call.
MatmulPrecision matmul_precision();
void set_matmul_precision(MatmulPrecision p);

// Typed front doors, so that callers write gemm(args) for float and double alike.
inline void gemm(const GemmArgs<float>& a) {
  const IsaKernels& k = isa_kernels();
  if (k.gemm_bf16 != nullptr && matmul_precision() == MatmulPrecision::medium) k.gemm_bf16(a);
  else k.gemm_f32(a);
}
inline void gemm(const GemmArgs<double>& a) { isa_kernels().gemm_f64(a); }
inline void elementwise(const ElementwiseArgs<float>& a) { isa_kernels().elementwise_f32(a); }
inline void elementwise(const ElementwiseArgs<double>& a) { isa_kernels().elementwise_f64(a); }
inline void softmax(const SoftmaxArgs<float>& a) { isa_kernels().softmax_f32(a); }
inline void softmax(const SoftmaxArgs<double>& a) { isa_kernels().softmax_f64(a); }
inline double cross_entropy(const CrossEntropyArgs<float>& a) { return isa_kernels().cross_entropy_f32(a); }
inline double cross_entropy(const CrossEntropyArgs<double>& a) { return isa_kernels().cross_entropy_f64(a); }
#define FASTNN_SPARSE_FRONT_DOORS(T, suffix)                                                               \
  inline bool block_sparse_rows(const T* x, index_t rows, index_t cols, index_t max_entries,                 \
                                const BlockSparseBuffers<T>& out) {                                         \
    return isa_kernels().block_sparse_rows_##suffix(x, rows, cols, max_entries, out);                       \
  }                                                                                                         \
  inline bool block_sparse_columns(const T* x, index_t rows, index_t cols, index_t max_entries,              \
                                   const BlockSparseBuffers<T>& out) {                                      \
    return isa_kernels().block_sparse_columns_##suffix(x, rows, cols, max_entries, out);                    \
  }                                                                                                         \
  inline bool sparse_matmul(const SparseMatmulArgs<T>& a) { return isa_kernels().sparse_matmul_##suffix(a); }
FASTNN_SPARSE_FRONT_DOORS(float, f32)
FASTNN_SPARSE_FRONT_DOORS(double, f64)
#define FASTNN_OPTIM_FRONT_DOORS(T, suffix)                                                                  \
  inline void sgd_step(T* p, const T* g, T* buf, index_t n, const SgdHyper& h) {                              \
    isa_kernels().sgd_step_##suffix(p, g, buf, n, h);                                                         \
  }                                                                                                           \
  inline void adagrad_step(T* p, const T* g, T* sum, index_t n, const AdagradHyper& h) {                      \
    isa_kernels().adagrad_step_##suffix(p, g, sum, n, h);                                                     \
  }                                                                                                           \
  inline void rmsprop_step(T* p, const T* g, T* sq, T* ga, T* buf, index_t n, const RmspropHyper& h) {        \
    isa_kernels().rmsprop_step_##suffix(p, g, sq, ga, buf, n, h);                                             \
  }                                                                                                           \
  inline void adam_step(T* p, const T* g, T* m, T* v, index_t n, const AdamHyper& h) {                        \
    isa_kernels().adam_step_##suffix(p, g, m, v, n, h);                                                       \
  }
FASTNN_OPTIM_FRONT_DOORS(float, f32)
FASTNN_OPTIM_FRONT_DOORS(double, f64)

}  // namespace fastnn

// Each ISA translation unit defines these inside namespace fastnn::<isa>.
#define FASTNN_DECLARE_OPTIM(T, suffix)                                                                     \
  void sgd_step_##suffix(T*, const T*, T*, index_t, const SgdHyper&);                                        \
  void adagrad_step_##suffix(T*, const T*, T*, index_t, const AdagradHyper&);                                \
  void rmsprop_step_##suffix(T*, const T*, T*, T*, T*, index_t, const RmspropHyper&);                        \
  void adam_step_##suffix(T*, const T*, T*, T*, index_t, const AdamHyper&);
#define FASTNN_DECLARE_SPARSE(T, suffix)                                                        \
  bool block_sparse_rows_##suffix(const T*, index_t, index_t, index_t, const BlockSparseBuffers<T>&);    \
  bool block_sparse_columns_##suffix(const T*, index_t, index_t, index_t, const BlockSparseBuffers<T>&); \
  bool sparse_matmul_##suffix(const SparseMatmulArgs<T>&);
#define FASTNN_DECLARE_ISA_KERNELS(ns)                                        \
  namespace fastnn { namespace ns {                                           \
  void gemm_f32(const GemmArgs<float>&);                                      \
  void gemm_f64(const GemmArgs<double>&);                                     \
  void elementwise_f32(const ElementwiseArgs<float>&);                        \
  void elementwise_f64(const ElementwiseArgs<double>&);                       \
  void softmax_f32(const SoftmaxArgs<float>&);                                \
  void softmax_f64(const SoftmaxArgs<double>&);                               \
  double cross_entropy_f32(const CrossEntropyArgs<float>&);                   \
  double cross_entropy_f64(const CrossEntropyArgs<double>&);                  \
  FASTNN_DECLARE_SPARSE(float, f32)                                           \
  FASTNN_DECLARE_SPARSE(double, f64)                                          \
  FASTNN_DECLARE_OPTIM(float, f32)                                            \
  FASTNN_DECLARE_OPTIM(double, f64)                                           \
  } }
FASTNN_DECLARE_ISA_KERNELS(generic)
FASTNN_DECLARE_ISA_KERNELS(avx2)
FASTNN_DECLARE_ISA_KERNELS(avx512)
namespace fastnn { namespace avx512_bf16 { void gemm_bf16(const GemmArgs<float>&); } }
