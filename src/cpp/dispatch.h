// Run-time instruction-set dispatch.
//
// Kernels whose speed depends on vector width (GEMM, the softmax family) are
// compiled once per instruction set, each copy in its own namespace
// fastnn::<isa> (see FASTNN_ISA_SOURCES in CMakeLists.txt). At first use the best
// set this CPU supports is picked, capped by the FASTNN_ISA environment variable
// (avx512_bf16 | avx512 | avx2 | generic), and every call goes through that table.
// avx512_bf16 is the avx512 table plus a GEMM on bfloat16 panels and sparse
// products on bfloat16 pairs, which float32 matmuls take in "medium" precision
// (set_matmul_precision).
//
// FASTNN_KERNELS (below the argument types) lists the kernels of the table: a
// kernel is a template `Return name(const Args<T>&)` in each level's namespace,
// compiled for float and double by FASTNN_ISA_KERNEL(name) in its source. The
// table's members, each level's declarations, the tables and the front doors
// come from the list.
#pragma once
#include "activation.h"
#include "common.h"

namespace fastnn {

// The levels, in increasing order: a table per level, FASTNN_ISA caps at a level.
#define FASTNN_ISAS(X) X(generic) X(avx2) X(avx512) X(avx512_bf16)
#define FASTNN_ISA_ENUMERATOR(level) level,
enum class Isa : int { FASTNN_ISAS(FASTNN_ISA_ENUMERATOR) };
#undef FASTNN_ISA_ENUMERATOR

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

// An activation (activation.h) or its gradient, elementwise over n values:
// out = f(a), or with `backward` out = f'(.) * b, with a what the activation's
// gradient is written in (its output or its input) and b = dL/d(output).
// param is the activation's parameter. out may be a or b itself.
template <class T>
struct ElementwiseArgs {
  Act act;
  bool backward;
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
// With `pairs` (float32 in "medium" precision, for VDPBF16PS) a position p
// stands for the depths 2p and 2p + 1, and a value is their two values rounded
// to bf16 and side by side (the low half for 2p), in a float's bits.
// capacity is sparse_positions(depth, pairs).
constexpr int kSparseBlockLines = 4;
// Positions per line of a form of `depth`: one per depth, or one per pair of depths.
inline index_t sparse_positions(index_t depth, bool pairs) { return pairs ? (depth + 1) / 2 : depth; }
template <class T>
struct BlockSparse {
  index_t lines = 0;
  index_t depth = 0;
  bool pairs = false;
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

// Buffers a BlockSparse is built in: count (blocks), index (blocks *
// capacity), value (blocks * kSparseBlockLines * capacity).
template <class T>
struct BlockSparseBuffers {
  index_t* count;
  std::int32_t* index;
  T* value;
};

// x (rows, cols) as a BlockSparse whose lines are x's rows (depth cols) or,
// by_columns, x's columns (depth rows), built in `out`, unless it has more
// than max_entries entries: then the kernel returns false early. With pairs,
// the form of pairs of depths (only float32 on a level with bf16: false elsewhere).
template <class T>
struct BlockSparseFillArgs {
  const T* x; index_t rows, cols;
  bool by_columns;
  bool pairs;
  index_t max_entries;
  BlockSparseBuffers<T> out;
};

// In-place optimizer updates of one parameter (n elements) and its state, with
// torch.optim's hyperparameters; state arrays that an option does not use may
// be null (momentum_buf without momentum, grad_avg unless centered). step
// counts from 1 and is incremented by the caller before the call.
template <class T>
struct SgdArgs {
  T* param; const T* grad; T* momentum_buf; index_t n;
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, first_step;
};
template <class T>
struct AdagradArgs {
  T* param; const T* grad; T* state_sum; index_t n;
  double step, lr, lr_decay, weight_decay, eps;
  bool maximize;
};
template <class T>
struct RmspropArgs {
  T* param; const T* grad; T* square_avg; T* grad_avg; T* momentum_buf; index_t n;
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};
template <class T>
struct AdamArgs {
  T* param; const T* grad; T* exp_avg; T* exp_avg_sq; index_t n;
  double step, lr, beta1, beta2, eps, weight_decay;
  bool decoupled_weight_decay, maximize;
};

// X(name, Args, Return) for each kernel of the table. A new kernel is its Args
// above, a line here, and its template in a *_isa.cpp that ends with
// FASTNN_ISA_KERNEL(name).
#define FASTNN_KERNELS(X)                          \
  X(gemm, GemmArgs, void)                          \
  X(elementwise, ElementwiseArgs, void)            \
  X(softmax, SoftmaxArgs, void)                    \
  X(cross_entropy, CrossEntropyArgs, double)       \
  X(fill_block_sparse, BlockSparseFillArgs, bool)  \
  X(sparse_matmul, SparseMatmulArgs, bool)         \
  X(sgd_step, SgdArgs, void)                       \
  X(adagrad_step, AdagradArgs, void)               \
  X(rmsprop_step, RmspropArgs, void)               \
  X(adam_step, AdamArgs, void)

// One kernel's float and double entry points, called alike.
template <template <class> class ArgsOf, class ReturnType>
struct IsaKernel {
  template <class T> using Args = ArgsOf<T>;
  using Return = ReturnType;
  Return (*f32)(const Args<float>&);
  Return (*f64)(const Args<double>&);
  Return operator()(const Args<float>& a) const { return f32(a); }
  Return operator()(const Args<double>& a) const { return f64(a); }
};

struct IsaKernels {
  const char* name;
#define FASTNN_TABLE_MEMBER(kernel, Args, Return) IsaKernel<Args, Return> kernel;
  FASTNN_KERNELS(FASTNN_TABLE_MEMBER)
#undef FASTNN_TABLE_MEMBER
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
// Whether the avx512_bf16 level is active (the CPU has it and FASTNN_ISA does not cap it).
bool has_bf16();
// Whether float32 products round their inputs to bf16 now: "medium" on the avx512_bf16 level.
bool bf16_matmuls();

// The typed front doors, so that callers write gemm(args) for float and double alike.
#define FASTNN_FRONT_DOOR(kernel, Args, Return) \
  template <class T>                              \
  inline Return kernel(const Args<T>& a) {        \
    return isa_kernels().kernel(a);               \
  }
FASTNN_KERNELS(FASTNN_FRONT_DOOR)
#undef FASTNN_FRONT_DOOR

// Each level's kernels, defined in its namespace by the *_isa.cpp sources.
#define FASTNN_DECLARE_KERNEL(kernel, Args, Return) template <class T> Return kernel(const Args<T>&);
namespace generic { FASTNN_KERNELS(FASTNN_DECLARE_KERNEL) }
namespace avx2 { FASTNN_KERNELS(FASTNN_DECLARE_KERNEL) }
namespace avx512 { FASTNN_KERNELS(FASTNN_DECLARE_KERNEL) }
#undef FASTNN_DECLARE_KERNEL
// avx512_bf16 compiles only the GEMM and the sparse products: those kernels are
// its own, and (qualified lookup going through the using-directive) every other
// kernel is avx512's.
namespace avx512_bf16 {
using namespace avx512;
template <class T> void gemm(const GemmArgs<T>&);
template <class T> bool fill_block_sparse(const BlockSparseFillArgs<T>&);
template <class T> bool sparse_matmul(const SparseMatmulArgs<T>&);
}

}  // namespace fastnn

// In a level's source, after the kernel's template: compiles it for float and double.
#define FASTNN_ISA_KERNEL(kernel)                                                                        \
  template decltype(IsaKernels::kernel)::Return kernel(const decltype(IsaKernels::kernel)::Args<float>&); \
  template decltype(IsaKernels::kernel)::Return kernel(const decltype(IsaKernels::kernel)::Args<double>&);
