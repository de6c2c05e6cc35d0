// Kernels that do not depend on the vector width (the compiler's baseline
// vectorization is enough: they are memory-bound). Each is instantiated for
// float and double. Pointers are to contiguous arrays; n counts elements.
#pragma once
#include <cstdint>

#include "dispatch.h"

namespace fastnn {

// ---- losses. Each forward returns the sum of its per-element (or per-row)
// losses and, when `per_element` is not null, writes them there too.
// Each backward writes scale * d(sum of losses)/d(prediction).

// y, t, per_element: (n,). Returns sum((y - t)^2).
template <class T> double squared_error(const T* y, const T* t, T* per_element, index_t n);
template <class T> void squared_error_backward(const T* y, const T* t, T* dy, index_t n, double scale);
// Textbook CE on probabilities y (rows, cols); target labels (rows,) or t (rows, cols).
// Returns -sum(t * log(y + 1e-7)) (not yet divided by rows).
template <class T>
double cross_entropy_error(const T* y, const std::int64_t* labels, const T* t, index_t rows, index_t cols);
template <class T>
void cross_entropy_error_backward(const T* y, const std::int64_t* labels, const T* t, T* dy,
                                  index_t rows, index_t cols, double scale);
// p, t: (n,). torch's BCE: each log clamped at -100.
template <class T> double binary_cross_entropy(const T* p, const T* t, T* per_element, index_t n);
template <class T> void binary_cross_entropy_backward(const T* p, const T* t, T* dp, index_t n, double scale);
// z, t: (n,). max(z, 0) - z t + log1p(exp(-|z|)).
template <class T>
double binary_cross_entropy_with_logits(const T* z, const T* t, T* per_element, index_t n);
template <class T>
void binary_cross_entropy_with_logits_backward(const T* z, const T* t, T* dz, index_t n, double scale);

// ---- linear layer, W is (in, out) so that y = x @ W + b.
// A mostly-zero x (the pixels of an image) is multiplied by its nonzeros only:
// block_sparse_form gives x (rows, cols) in the form the forward (lines = rows)
// or the weight gradient (by_columns: lines = columns) uses, of bf16 pairs with
// `pairs`, or false when x is too dense for it to pay. `a` points into
// per-thread buffers, valid until the thread's next call. linear_forward and
// linear_backward try that form only when `sparse` is true (of pairs when
// float32 products run in bf16); otherwise they always multiply densely.
template <class T>
bool block_sparse_form(const T* x, index_t rows, index_t cols, bool by_columns, bool pairs, BlockSparse<T>& a);
// x (rows, in), W (in, out), b (out,) or null -> y (rows, out) = act(x @ W + b).
template <class T>
void linear_forward(const T* x, const T* W, const T* b, T* y, index_t rows, index_t in, index_t out, Act act,
                    bool sparse);
// dy (rows, out) is dL/d(act output), y (rows, out) that output (unused for Act::none).
// dz (rows, out) is scratch for dy * act'(y) (may be dy itself, or null for Act::none).
// Writes dW (in, out), db (out,) if not null, and dx (rows, in) if not null.
// With x_act, x is that activation's output and dx is written as dx * x_act'(x):
// the gradient the layer before needs, in the dx GEMM's store.
template <class T>
void linear_backward(const T* x, const T* W, const T* dy, const T* y, T* dz, T* dx, T* dW, T* db,
                     index_t rows, index_t in, index_t out, Act act, Act x_act, bool sparse);

// out (count, row_bytes) = rows of x picked by index (count,); index already checked.
void gather_rows(const char* x, const std::int64_t* index, char* out, index_t count, index_t row_bytes);

// Starts loading rows of x picked by index (count,) into the cache, and returns
// at once (a hint: nothing is written); index already checked.
void prefetch_rows(const char* x, const std::int64_t* index, index_t count, index_t row_bytes);

}  // namespace fastnn
