// The CPU driver of the reduction rules (NOTE: [reduction rules] in include/genesis/reduce.h):
// one OpenMP region runs every pass of every tensor of the call; within a pass the threads share
// the tasks of all tensors, then the per-tensor finishes. A task's result depends only on its
// elements and the fixed lane order, never on which thread ran it: same bits for any thread
// count, and the same as the CUDA driver's.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "flat_partition.h"
#include "genesis/cpu.h"
#include "genesis/reduce_ref.h"
#include "lane_tree.h"
#include "update_driver.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

// Lane j's accumulators in a lane-major block (sum k of lane j at acc[k][j]): neighbouring lanes
// are neighbouring doubles, so the loop over a round's lanes vectorizes. In a run's first round
// (kFirst) a visit's `acc[k] += v` stores 0.0 + v, the bits of adding v to a cleared sum,
// without reading the block: the block is not cleared before each run (for a 1000-column row,
// clearing 512 lanes of two sums cost as much as a fifth of the row's visits).
template <bool kFirst>
struct LaneSums {
  struct Sum {
    double* at;
    void operator+=(double v) const {
      if constexpr (kFirst) {
        *at = 0.0 + v;
      } else {
        *at += v;
      }
    }
  };
  double* at;
  Sum operator[](int k) const { return {at + k * kLanes}; }
};

// Runs task `task` (of kind kKind) of pass kPass of one tensor: its lanes interleaved (element
// k on lane k % lanes), then the tree or the per-lane hand-over. Pass and kind are template
// arguments and the tensor and coefficients local copies, so that the compiler sees a
// branch-free lane loop whose only stores are the tensor's arrays and the accumulators: it
// vectorizes it (with run-time pass or kind it did not). `prefetch`: the rule's prefetch runs
// (software_prefetch(): NOTE: [prefetch by vendor] in dispatch.cpp).
template <typename Rule, int kPass, int kKind, bool kKept, typename Ref>
void run_task_pass(const typename Rule::Options& o, const Ref& tensor, int64_t task, const TaskInfo& info,
                   bool prefetch) {
  const Ref r = tensor;
  const typename Rule::template Coeffs<typename Ref::T> c = Rule::coeffs(kPass, o, r, task);
  const int64_t length = info.length;
  const int lanes = info.lanes;
  alignas(64) double acc[kMaxSums][kLanes];
  // Only the sums the task uses (a pass that only writes uses none): for a short task (a
  // matrix row) zeroing and combining all kMaxSums x kLanes costs as much as its elements.
  const int sums = info.mode == TaskMode::None ? 0 : info.sums;
  double total[kMaxSums] = {};
  for (int64_t seg = 0; seg < info.segments; ++seg) {
    // Each run starts its sums, but a joined task's later runs add to its first run's.
    const bool starts = seg == 0 || !info.joined;
    // The lanes the first round does not visit start cleared; it starts the others.
    for (int k = 0; starts && k < sums; ++k)
      for (int j = int(std::min<int64_t>(lanes, length)); j < lanes; ++j) acc[k][j] = 0.0;
    int64_t round = 0;
    for (int64_t base = 0; base < length; base += lanes, ++round) {
      const int n = int(std::min<int64_t>(lanes, length - base));
      if constexpr (Prefetches<Rule>::value)  // NOTE: [prefetch]: a cache line at a time
        for (int j = 0; prefetch && j < n; j += int(64 / sizeof(*r.param)))
          Rule::prefetch(kPass, r, c, task, LaneAt{base + j + kPrefetchAhead, round, j, kKind, kKept, seg});
      if (round == 0 && starts) {
        for (int j = 0; j < n; ++j)
          Rule::visit(kPass, o, r, c, task, LaneAt{base + j, round, j, kKind, kKept, seg}, LaneSums<true>{&acc[0][j]});
      } else {
        for (int j = 0; j < n; ++j)
          Rule::visit(kPass, o, r, c, task, LaneAt{base + j, round, j, kKind, kKept, seg}, LaneSums<false>{&acc[0][j]});
      }
    }
    if (info.mode == TaskMode::Lanes) break;  // (a Lanes task is one run)
    if (info.mode == TaskMode::Sum && (!info.joined || seg + 1 == info.segments)) {
      for (int k = 0; k < sums; ++k) total[k] = combine_lanes(acc[k], lanes);
      Rule::task_done(kPass, r, task, info.joined ? 0 : int(seg), total);
    }
  }
  if (info.mode == TaskMode::Lanes) {
    for (int j = 0; j < lanes; ++j) {
      for (int k = 0; k < sums; ++k) total[k] = acc[k][j];
      Rule::task_done(kPass, r, task, j, total);
    }
  }
}

// run_task_pass for a pass and kind known at run time, and for whether the tensor has a kept
// array (a loop each way, for rules that keep values: NOTE: [kept values]).
template <typename Rule, int kPass = 0, int kKind = 0, typename Ref>
void run_task(int pass, const typename Rule::Options& o, const Ref& r, int64_t task, const TaskInfo& info,
              bool prefetch) {
  if constexpr (kPass < Rule::kPasses) {
    if constexpr (kKind < Rule::kKinds) {
      if (pass == kPass && info.kind == kKind) {
        if constexpr (KeepsValue<Rule>::value)
          if (r.kept) return run_task_pass<Rule, kPass, kKind, true>(o, r, task, info, prefetch);
        return run_task_pass<Rule, kPass, kKind, false>(o, r, task, info, prefetch);
      }
      run_task<Rule, kPass, kKind + 1>(pass, o, r, task, info, prefetch);
    } else {
      run_task<Rule, kPass + 1, 0>(pass, o, r, task, info, prefetch);
    }
  }
}

// NOTE: [cache-blocked passes]
// A reduction rule passes over a tensor two or three times, and every pass after the first
// rereads what the first read (LAMB: p, m, v; Adafactor: p, g). Run pass by pass over all the
// tensors of a call, each pass streams them all from memory again: LAMB's 40 bytes per
// parameter (docs/performance.md#passes-over-memory). Run group of tensors by group instead,
// every pass of a group before the next group, and the later passes find much of the group
// still in the cache: at best memory moves only what the first pass reads and the last one
// writes (LAMB 28 bytes, as AdamW; Adafactor 12). Each tensor's numbers depend only on its own
// elements, so the grouping changes no bit.
// A group is the shortest run of consecutive tensors with at least kGroupChunksPerThread x
// kSumChunk elements per thread: enough that every thread has work in every pass and the two
// barriers per pass of a group stay rare, and no more, because the less a pass touches before
// the next pass comes back to it, the nearer the cache level that still holds it. (Groups of
// up to half the last-level cache were slower: the largest cache a CPU reports is shared with
// its other cores and, in a virtual machine, with other tenants; docs/performance.md.) A tensor
// with more elements than that is a group alone: its later passes need the first's sums over
// all of it.
// Returns the groups as boundaries: group k is tensors groups[k] .. groups[k + 1] - 1.
constexpr int64_t kGroupChunksPerThread = 4;

inline int64_t group_min_elements(int threads) { return int64_t(threads) * kGroupChunksPerThread * kSumChunk; }

template <typename Ref>
std::vector<int64_t> cache_groups(const std::vector<Ref>& refs, int threads) {
  const int64_t min_elements = group_min_elements(threads);
  std::vector<int64_t> groups{0};
  int64_t elements = 0;
  for (int64_t t = 0; t < int64_t(refs.size()); ++t) {
    if (elements >= min_elements) {
      groups.push_back(t);
      elements = 0;
    }
    elements += refs[t].shape.numel;
  }
  groups.push_back(int64_t(refs.size()));
  return groups;
}

// NOTE: [task affinity]
// Within a pass the threads split a group's tasks statically: each takes one run of
// consecutive tasks, the runs of about equal cost (a task's elements, runs included, and its
// lanes). Tasks that cover the same elements in several passes (Adafactor's tiles in passes 0,
// 2 and 3, LAMB's chunks) cost the same in each, so a thread gets the same elements in every
// pass and finds in its own L2 cache what it left there in the last one. (Threads taking tasks
// as they finished spread a tensor's tiles over the cores differently in every pass:
// Adafactor, 2 threads, three alternating pairs: 50 x 1000 x 1000 45.0-46.1 -> 43.7-45.7 ms
// per step, 2000 x 25 x 40 5.9-6.2 -> 5.5-5.7 ms.)
struct TaskRange {
  int64_t first, last;
};

// The calling thread's run of tasks begin .. end - 1, from the running sums of their costs.
inline TaskRange thread_share(const std::vector<int64_t>& cost, int64_t begin, int64_t end) {
  const int threads = omp_get_num_threads(), me = omp_get_thread_num();
  const int64_t total = cost[end] - cost[begin];
  auto start = [&](int j) {  // the first task whose cost so far reaches the share of threads 0 .. j-1
    return int64_t(std::lower_bound(cost.begin() + begin, cost.begin() + end, cost[begin] + total * j / threads) -
                   cost.begin());
  };
  return {start(me), me + 1 == threads ? end : start(me + 1)};
}

// Kept values (NOTE: [kept values]) for every group of at most max(2^22, 2 x the elements that
// close a group) elements: at any thread count, every group of tensors that are each smaller
// than what closes a group. The bound is on memory (a value per element of the largest such
// group: 16 MiB of float32 values, 32 of float64, or 2 MiB of float32 per thread where that is
// more), not on speed: keeping moves the same bytes as recomputing (a write and a read of u
// against a reread of m and v) and spares the divider.
constexpr int64_t kMinKeptLimit = int64_t(1) << 22;
inline int64_t max_kept_elements(int threads) { return std::max(kMinKeptLimit, 2 * group_min_elements(threads)); }

// `bytes` of storage for kept values, owned by the calling thread and reused by its steps; null
// where the memory is not there (the step then recomputes: keeping is only a saving).
inline void* kept_storage(std::size_t bytes) {
  static thread_local std::unique_ptr<std::byte[]> storage;
  static thread_local std::size_t size = 0;
  if (size < bytes) {
    storage.reset();  // before allocating the larger array: never both at once
    storage.reset(new (std::nothrow) std::byte[bytes]);
    size = storage ? bytes : 0;
  }
  return storage.get();
}

// Points the tensors of every group of at most `limit` elements at their kept arrays:
// one array per group, reused by the next group (groups run one after the other).
template <typename Ref>
void assign_kept(std::vector<Ref>& refs, const std::vector<int64_t>& groups, int64_t limit) {
  const std::size_t count = groups.size() - 1;
  std::vector<int64_t> elements(count, 0);
  int64_t largest = 0;
  for (std::size_t k = 0; k < count; ++k) {
    for (int64_t t = groups[k]; t < groups[k + 1]; ++t) elements[k] += refs[t].shape.numel;
    if (elements[k] <= limit) largest = std::max(largest, elements[k]);
  }
  if (largest == 0) return;
  using T = typename Ref::T;
  T* storage = static_cast<T*>(kept_storage(std::size_t(largest) * sizeof(T)));
  if (!storage) return;
  for (std::size_t k = 0; k < count; ++k) {
    if (elements[k] > limit) continue;
    int64_t at = 0;
    for (int64_t t = groups[k]; t < groups[k + 1]; ++t) {
      refs[t].kept = storage + at;
      at += refs[t].shape.numel;
    }
  }
}

// `count` doubles of scratch for a step's tensors (Rule::scratch_size), owned by the calling
// thread and reused by its steps. Not cleared: a rule writes every scratch entry before reading
// it, as it must on CUDA, where the scratch is fresh stream-ordered memory (clearing about 8 MB
// a step, Adafactor on 50M parameters of matrices, was 3-4 % of the step). A new array is
// filled with NaN and later steps find the last step's numbers there, so that a rule which read
// an entry before writing it would fail the tests against the references.
inline double* scratch_storage(std::size_t count) {
  static thread_local std::unique_ptr<double[]> storage;
  static thread_local std::size_t size = 0;
  if (size < count) {
    storage.reset();  // before allocating the larger array: never both at once
    size = 0;
    storage.reset(new double[count]);
    size = count;
    std::fill_n(storage.get(), count, std::numeric_limits<double>::quiet_NaN());
  }
  return storage.get();
}

// GX: the step's gradient transform, GradTransform<T> or PlainGrad (with_grad_transform).
template <typename Rule, typename P, typename S, ParamStore kStore, typename GX>
void run_reduction(const typename Rule::Options& o, const StepConfig& config, TensorSlots* tensors, int64_t count,
                   const GX& gx) {
  using Ref = TensorRef<P, S, kStore, GX>;
  // Everything the step allocates (the references, the task lists, the groups, the scratch and
  // the kept arrays) comes before the first step counter advances: a std::bad_alloc leaves every
  // tensor and its counter as they were.
  std::vector<Ref> refs(count);
  std::vector<int64_t> scratch_at(count + 1, 0);
  int64_t elements = 0;
  for (int64_t t = 0; t < count; ++t) {
    const TensorSlots& ts = tensors[t];
    refs[t].shape = TensorShape{ts.numel, ts.rows, ts.cols};
    scratch_at[t + 1] = scratch_at[t] + Rule::scratch_size(refs[t].shape);
    elements += ts.numel;
  }
  // Task lists: pass p's tasks of tensor t are first[p][t] .. first[p][t + 1] - 1, described by
  // info[p][task], weighed by their running sums cost[p] (NOTE: [task affinity]).
  std::vector<std::vector<int64_t>> first(Rule::kPasses, std::vector<int64_t>(count + 1, 0));
  std::vector<std::vector<TaskInfo>> info(Rule::kPasses);
  std::vector<std::vector<int64_t>> cost(Rule::kPasses);
  for (int p = 0; p < Rule::kPasses; ++p) {
    for (int64_t t = 0; t < count; ++t) first[p][t + 1] = first[p][t] + Rule::tasks(p, refs[t].shape);
    info[p].resize(first[p][count]);
    cost[p].assign(first[p][count] + 1, 0);
    for (int64_t t = 0; t < count; ++t)
      for (int64_t task = first[p][t]; task < first[p][t + 1]; ++task) {
        const TaskInfo& i = info[p][task] = Rule::task(p, refs[t].shape, task - first[p][t]);
        cost[p][task + 1] = cost[p][task] + i.length * i.segments + i.lanes;
      }
  }
  const int threads = num_threads();
  const std::vector<int64_t> groups = cache_groups(refs, threads);
  if constexpr (KeepsValue<Rule>::value) assign_kept(refs, groups, max_kept_elements(threads));
  double* scratch = scratch_storage(std::size_t(scratch_at[count]));
  const bool prefetch = Prefetches<Rule>::value && software_prefetch();
  for (int64_t t = 0; t < count; ++t) {
    TensorSlots& ts = tensors[t];
    if constexpr (Rule::kCountsSteps) *ts.step += 1.0f;
    Ref& r = refs[t];  // (its shape and kept array are set above)
    r.param = static_cast<P*>(ts.param);
    r.grad = static_cast<const P*>(ts.grad);
    r.master = ts.master;
    for (int k = 0; k < kMaxStates; ++k) r.state[k] = static_cast<S*>(ts.state[k]);
    r.grad_transform = gx;
    r.rng_key = kStore == ParamStore::Stochastic ? stream_key(config.seed, ts.id, config.counter) : 0u;
    r.t = ts.step ? double(*ts.step) : 0.0;
    r.scratch = scratch + scratch_at[t];
    Rule::begin(o, r);
  }
#pragma omp parallel num_threads(region_threads(elements >= kParallelThreshold))
  {
    for (std::size_t k = 0; k + 1 < groups.size(); ++k) {
      const int64_t t0 = groups[k], t1 = groups[k + 1];
      for (int p = 0; p < Rule::kPasses; ++p) {
        const std::vector<int64_t>& f = first[p];
        const TaskRange range = thread_share(cost[p], f[t0], f[t1]);
        for (int64_t task = range.first, t = t0; task < range.last; ++task) {
          while (task >= f[t + 1]) ++t;
          run_task<Rule>(p, o, refs[t], task - f[t], info[p][task], prefetch);
        }
        // A pass's results are read by its finishes and the next pass: a barrier; a finish's
        // by the next pass: the loop's own barrier. No barrier after a group's last pass, where
        // nothing is left to wait for (the next group's tensors are others) unless the groups
        // share the kept array.
        if (Rule::finishes(p)) {
#pragma omp barrier
#pragma omp for schedule(static)
          for (int64_t t = t0; t < t1; ++t) Rule::finish(p, o, refs[t]);
        } else if (p + 1 < Rule::kPasses || KeepsValue<Rule>::value) {
#pragma omp barrier
        }
      }
    }
  }
}

// One step of the reduction rule whose options these are, for the storage the config describes.
// A step whose found_inf flag is set changes nothing, step counters included.
template <typename Options>
void run_reduction_rule(const Options& options, const StepConfig& config, TensorSlots* tensors, int64_t count) {
  using Spec = RuleSpec<Options>;
  const std::string op = std::string(Spec::name(options)) + " step";
  if (config.found_inf && *config.found_inf != 0.0f) return;
  Spec::select(options, [&](auto rule) {
    dispatch_storage(op.c_str(), config, [&](auto param, auto state, auto store) {
      using P = decltype(param);
      with_grad_transform(grad_transform<MathType<P>>(config), [&](const auto& gx) {
        run_reduction<decltype(rule), P, decltype(state), decltype(store)::value>(options, config, tensors, count, gx);
      });
    });
  });
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT

namespace genesis::cpu::GENESIS_CPU_VARIANT {

// The driver a rule of rules/list.h runs on: element-wise (update_driver.h) or reduction.
template <typename Options>
void run_any_rule(const Options& options, const StepConfig& config, TensorSlots* tensors, int64_t count) {
  if constexpr (IsReduction<Options>::value) {
    run_reduction_rule(options, config, tensors, count);
  } else {
    run_rule(options, config, tensors, count);
  }
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
