// The thread count every CPU call uses (NOTE: [threads and fork]).
#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "genesis/cpu.h"
#include "threads.h"

namespace genesis::cpu {

// NOTE: [threads and fork]
// One count for the whole process, as torch.set_num_threads: omp_set_num_threads alone would
// set it for the calling thread only (a training loop in another thread would not see it).
// Until it is set, OpenMP's own default applies (OMP_NUM_THREADS, else every core).
// GNU OpenMP's worker threads do not survive fork(): a child forked after its parent ran a
// parallel region of more than one thread hangs in its first such region (measured: a
// Hogwild-style multiprocessing run with the fork start method hung in both genesis's step and
// torch's). So a child forked after genesis ran a team runs every call on the forking thread
// alone, and refuses more threads; the spawn and forkserver start methods are unaffected.
namespace {
std::atomic<int> g_threads{0};  // 0: OpenMP's default
std::atomic<bool> g_team_started{false};
std::atomic<bool> g_forked_after_team{false};

void child_after_fork() {
  if (g_team_started.load(std::memory_order_relaxed)) g_forked_after_team.store(true, std::memory_order_relaxed);
}
const int g_at_fork = pthread_atfork(nullptr, nullptr, child_after_fork);
}  // namespace

int num_threads() {
  (void)g_at_fork;
  if (g_forked_after_team.load(std::memory_order_relaxed)) return 1;
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("number of threads must be at least 1, got " + std::to_string(n));
  if (n > 1 && g_forked_after_team.load(std::memory_order_relaxed))
    throw std::runtime_error(
        "this process was forked after its parent ran genesis on several threads, and OpenMP's "
        "threads do not survive fork(): it runs on one (start processes with the spawn or "
        "forkserver method to use more)");
  g_threads.store(n, std::memory_order_relaxed);
}

int region_threads(bool parallel) {
  const int n = parallel ? num_threads() : 1;
  if (n > 1) g_team_started.store(true, std::memory_order_relaxed);
  return n;
}

}  // namespace genesis::cpu
