// parallel_team / parallel_for / parallel_sum on fastnn's thread pool
// (thread_pool.h). parallel_for splits [0, n) into one contiguous chunk per
// thread, but only when n is large enough to pay for waking the threads.
// Everything here has internal linkage and uses no library templates, so that
// the copies compiled into the per-ISA translation units cannot be mixed up by
// the linker.
#pragma once

#include "common.h"
#include "thread_pool.h"

namespace fastnn {

constexpr index_t kParallelGrain = 1 << 15;

static inline int threads_for(index_t n, index_t grain) { return n >= grain ? num_threads() : 1; }

template <class Body>
static void call_team_body(void* body, int t, int team) {
  (*static_cast<Body*>(body))(index_t(t), index_t(team));
}

// body(t, team) on every member t of a team of at most `threads` threads;
// team_barrier() inside body waits for the whole team.
template <class Body>
static inline void parallel_team(int threads, Body body) {
  run_team(threads, &call_team_body<Body>, &body);
}

template <class Body>
static inline void parallel_for(index_t n, Body body, index_t grain = kParallelGrain) {
  const int threads = threads_for(n, grain);
  if (threads <= 1) {
    body(index_t(0), n);
    return;
  }
  parallel_team(threads, [&](index_t t, index_t nt) {
    const index_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  });
}

// body(i) for every i in [0, n), each thread taking a chunk, in a vectorised
// loop. Each chunk runs its own copy of body, which should capture by value:
// what a body reaches through a reference must be reloaded after every store
// the loop makes, and the loop does not vectorise.
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
  double partial[kMaxThreads];
  index_t used = 1;
  parallel_team(threads, [&](index_t t, index_t nt) {
    const index_t begin = n * t / nt, end = n * (t + 1) / nt;
    partial[t] = begin < end ? body(begin, end) : 0.0;
    if (t == 0) used = nt;
  });
  double total = 0;
  for (index_t t = 0; t < used; ++t) total += partial[t];
  return total;
}

}  // namespace fastnn
