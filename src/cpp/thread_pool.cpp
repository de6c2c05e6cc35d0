// The worker threads behind every parallel kernel.
//
// Why fastnn owns its threads instead of using OpenMP's (libgomp):
// - fork: libgomp's team does not survive fork(), and a child that enters a
//   parallel region waits forever for workers that no longer exist. Here
//   pthread_atfork handlers let fork() wait for a running job, and the child
//   starts with no pool and builds a new one on its first parallel call.
// - neighbours: an MNIST step is a chain of short kernels, so workers must be
//   awake when the next one starts; but libgomp's idle workers keep spinning
//   for milliseconds, on the cores that NumPy's or PyTorch's threads need next.
//   Here a worker spins for kSpinMicroseconds after its last job (enough to
//   bridge the Python between two kernels of a step), then sleeps on a
//   condition variable. The spin is adaptive: when the last kLongGapsToStop
//   gaps between jobs were all longer than the spin, spinning would not have
//   caught the next job, so workers sleep at once and leave the cores to
//   whatever runs between fastnn's calls; one short gap brings the spin back.
// - one cap: calls from several Python threads take turns on the one pool, so
//   together they never run more than num_threads() threads.
// `#pragma omp simd` stays (it needs only the compiler, -fopenmp-simd).
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() {}
#endif

namespace fastnn {

namespace {

constexpr int kSpinMicroseconds = 50;
constexpr int kLongGapsToStop = 2;
constexpr int kPausesBeforeYield = 512;
using Clock = std::chrono::steady_clock;

// Spins until done(); a wait longer than kPausesBeforeYield pauses yields
// every 64, since the thread it waits for may be queued behind it on its core.
template <class Done>
void spin_until(Done done) {
  for (unsigned long spins = 0; !done(); ++spins) {
    cpu_relax();
    if (spins >= kPausesBeforeYield && (spins & 63) == 0) sched_yield();
  }
}

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n < kMaxThreads ? n : kMaxThreads;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n >= 1 ? static_cast<int>(n < unsigned(kMaxThreads) ? n : unsigned(kMaxThreads)) : 1;
}

std::atomic<int> g_num_threads{cores_available()};

// One worker's mailbox, on its own cache line: the caller writes the job, then
// bumps ticket; the worker runs it and bumps the pool's done count.
struct alignas(64) Slot {
  std::atomic<unsigned long> ticket{0};
  TeamFn fn = nullptr;
  void* ctx = nullptr;
  int t = 0, team = 0;
};

struct Pool {
  explicit Pool(int workers) : slots(workers) {}
  std::vector<Slot> slots;
  std::vector<std::thread> threads;
  std::atomic<int> done{0};
  std::atomic<bool> stopping{false};
  // Sleeping workers wait here; a caller notifies only when someone sleeps.
  std::mutex sleep_mutex;
  std::condition_variable wake;
  std::atomic<int> sleepers{0};
  // The running team's barrier.
  std::atomic<int> barrier_arrived{0};
  std::atomic<unsigned long> barrier_phase{0};
  // When the last job ended, and how many gaps in a row were too long to spin through.
  Clock::time_point last_job_end{};
  std::atomic<int> long_gaps{0};
};

// Serialises jobs, pool changes and fork(); held for the whole of a job.
std::mutex g_dispatch;
Pool* g_pool = nullptr;
// Pools abandoned by fork() in a child: their threads are gone, and touching
// their locks is unsafe; kept reachable so leak checkers do not report them.
std::vector<Pool*>* g_abandoned = nullptr;
thread_local int tl_team = 1;  // size of the team this thread is working in

void worker_main(Pool* pool, int index) {
  Slot& slot = pool->slots[index];
  unsigned long seen = 0;
  for (;;) {
    const bool spin = pool->long_gaps.load(std::memory_order_relaxed) < kLongGapsToStop;
    const auto spin_end = Clock::now() + std::chrono::microseconds(spin ? kSpinMicroseconds : 0);
    unsigned long ticket;
    for (int spins = 0;; ++spins) {
      ticket = slot.ticket.load(std::memory_order_acquire);
      if (ticket != seen || pool->stopping.load(std::memory_order_relaxed)) break;
      cpu_relax();
      if ((spins & 63) != 63) continue;
      // Another process's or library's thread waiting for this core gets it.
      sched_yield();
      if (Clock::now() > spin_end) {
        std::unique_lock<std::mutex> lock(pool->sleep_mutex);
        pool->sleepers.fetch_add(1);
        while (slot.ticket.load() == seen && !pool->stopping.load()) pool->wake.wait(lock);
        pool->sleepers.fetch_sub(1);
        spins = 0;
      }
    }
    if (pool->stopping.load(std::memory_order_relaxed)) return;
    seen = ticket;
    tl_team = slot.team;
    slot.fn(slot.ctx, slot.t, slot.team);
    tl_team = 1;
    pool->done.fetch_add(1, std::memory_order_release);
  }
}

void stop_pool(Pool* pool) {
  {
    std::lock_guard<std::mutex> lock(pool->sleep_mutex);
    pool->stopping.store(true);
  }
  pool->wake.notify_all();
  for (std::thread& th : pool->threads) th.join();
  delete pool;
}

// A pool of `workers` threads, or fewer if the system will not start more.
Pool* start_pool(int workers) {
  Pool* pool = new Pool(workers);
  for (int i = 0; i < workers; ++i) {
    try {
      pool->threads.emplace_back(worker_main, pool, i);
    } catch (const std::system_error&) {
      break;
    }
  }
  return pool;
}

void before_fork() { g_dispatch.lock(); }
void after_fork_in_parent() { g_dispatch.unlock(); }
void after_fork_in_child() {
  if (g_pool != nullptr) {
    if (g_abandoned == nullptr) g_abandoned = new std::vector<Pool*>();
    g_abandoned->push_back(g_pool);
    g_pool = nullptr;
  }
  g_dispatch.unlock();
}

void register_fork_handlers() {
  static const int registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
  (void)registered;
}

// The pool for `workers` workers, (re)started if needed; g_dispatch held.
Pool* pool_for(int workers) {
  register_fork_handlers();
  if (g_pool != nullptr && int(g_pool->slots.size()) != workers) {
    stop_pool(g_pool);
    g_pool = nullptr;
  }
  if (g_pool == nullptr) g_pool = start_pool(workers);
  return g_pool;
}

}  // namespace

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) n = 1;
  if (n > kMaxThreads) n = kMaxThreads;
  std::lock_guard<std::mutex> lock(g_dispatch);
  g_num_threads.store(n, std::memory_order_relaxed);
  // Workers beyond the new cap leave now, so that the cap holds for threads
  // that exist, not only for threads that work.
  if (g_pool != nullptr && int(g_pool->slots.size()) > n - 1) {
    stop_pool(g_pool);
    g_pool = nullptr;
  }
}

int pool_workers() {
  std::lock_guard<std::mutex> lock(g_dispatch);
  return g_pool == nullptr ? 0 : int(g_pool->threads.size());
}

void run_team(int threads, TeamFn fn, void* ctx) {
  const int cap = num_threads();
  if (threads > cap) threads = cap;
  if (threads <= 1 || tl_team > 1) {
    fn(ctx, 0, 1);
    return;
  }
  std::lock_guard<std::mutex> lock(g_dispatch);
  Pool* pool = pool_for(num_threads() - 1);
  const int live = int(pool->threads.size());
  const int team = threads - 1 < live ? threads : live + 1;
  if (team <= 1) {
    fn(ctx, 0, 1);
    return;
  }
  const Clock::time_point start = Clock::now();
  const bool long_gap = start - pool->last_job_end > std::chrono::microseconds(kSpinMicroseconds);
  const int long_gaps = pool->long_gaps.load(std::memory_order_relaxed);
  pool->long_gaps.store(long_gap ? std::min(long_gaps + 1, kLongGapsToStop) : 0, std::memory_order_relaxed);
  pool->done.store(0, std::memory_order_relaxed);
  pool->barrier_arrived.store(0, std::memory_order_relaxed);
  for (int i = 0; i < team - 1; ++i) {
    Slot& slot = pool->slots[i];
    slot.fn = fn;
    slot.ctx = ctx;
    slot.t = i + 1;
    slot.team = team;
    slot.ticket.fetch_add(1);
  }
  if (pool->sleepers.load() > 0) {
    { std::lock_guard<std::mutex> sleep_lock(pool->sleep_mutex); }
    pool->wake.notify_all();
  }
  tl_team = team;
  fn(ctx, 0, team);
  tl_team = 1;
  spin_until([&] { return pool->done.load(std::memory_order_acquire) == team - 1; });
  pool->last_job_end = Clock::now();
}

void team_barrier() {
  const int team = tl_team;
  if (team <= 1) return;
  // Only one team runs at a time, and its members cannot leave while it does.
  Pool* pool = g_pool;
  const unsigned long phase = pool->barrier_phase.load(std::memory_order_acquire);
  if (pool->barrier_arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == team) {
    pool->barrier_arrived.store(0, std::memory_order_relaxed);
    pool->barrier_phase.store(phase + 1, std::memory_order_release);
  } else {
    spin_until([&] { return pool->barrier_phase.load(std::memory_order_acquire) != phase; });
  }
}

}  // namespace fastnn

// The pool's cap as plain C symbols, for threadpoolctl (python/fastnn/_threadpool.py),
// which finds loaded libraries and calls into them through ctypes.
extern "C" {
__attribute__((visibility("default"))) int fastnn_get_num_threads(void) { return fastnn::num_threads(); }
__attribute__((visibility("default"))) void fastnn_set_num_threads(int n) { fastnn::set_num_threads(n); }
}
