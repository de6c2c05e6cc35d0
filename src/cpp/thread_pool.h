// fastnn's own worker threads: one process-wide pool that every parallel
// kernel runs on (see thread_pool.cpp for why it is not OpenMP's).
#pragma once

namespace fastnn {

// An upper bound on set_num_threads: far beyond any core count.
constexpr int kMaxThreads = 1024;

// Threads kernels may use together, the calling thread included: set by
// set_num_threads, by default the cores this process may run on.
int num_threads();
void set_num_threads(int n);

// Worker threads alive in the pool now (for tests; 0 before the first parallel call).
int pool_workers();

// Runs fn(ctx, t, team) for every t in [0, team) -- t = 0 on the calling
// thread, the others on pool workers -- and returns when all have returned.
// team <= threads: fewer when the pool cannot have more (inside another
// team's work, or after a failed thread start). Concurrent callers take turns.
using TeamFn = void (*)(void* ctx, int t, int team);
void run_team(int threads, TeamFn fn, void* ctx);

// Waits until every member of the calling thread's team has reached it; a
// no-op outside a team.
void team_barrier();

}  // namespace fastnn
