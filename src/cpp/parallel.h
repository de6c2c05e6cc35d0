// parallel_for / parallel_sum: split [0, n) into one contiguous chunk per
// thread, but only when n is large enough to pay for waking the threads.
// Everything here has internal linkage and uses no library templates, so that
// the copies compiled into the per-ISA translation units cannot be mixed up by
// the linker.
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"

namespace fastnn {

constexpr index_t kParallelGrain = 1 << 15;

static inline int threads_for(index_t n, index_t grain) { return n >= grain ? num_threads() : 1; }

template <class Body>
static inline void parallel_for(index_t n, Body body, index_t grain = kParallelGrain) {
  const int threads = threads_for(n, grain);
  if (threads <= 1) {
    body(index_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const index_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const index_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
}

// body(i) for every i in [0, n), each thread taking a chunk, in a vectorised
// loop. Each chunk runs its own copy of body, which should capture by value:
// what a body reaches through a reference must be reloaded after every store
// the loop makes, and the loop does not vectorise (an optimizer update ran 15x
// slower so).
template <class Body>
static inline void parallel_for_each(index_t n, Body body, index_t grain = kParallelGrain) {
  parallel_for(n, [body](index_t begin, index_t end) {
    const Body element = body;
#pragma omp simd
    for (index_t i = begin; i < end; ++i) element(i);
  }, grain);
}

// Sum of body(begin, end) over the chunks, added in chunk order so that the
// result depends only on the thread count, never on scheduling.
template <class Body>
static inline double parallel_sum(index_t n, Body body, index_t grain = kParallelGrain) {
  const int threads = threads_for(n, grain);
  if (threads <= 1) return body(index_t(0), n);
  double partial[kMaxThreads] = {};
#pragma omp parallel num_threads(threads)
  {
    const index_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const index_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) partial[t] = body(begin, end);
  }
  double total = 0;
  for (int t = 0; t < threads; ++t) total += partial[t];
  return total;
}

}  // namespace fastnn
