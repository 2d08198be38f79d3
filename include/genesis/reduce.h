// Reduction rules: update rules whose step needs sums over whole tensors (LAMB's trust ratio,
// Adafactor's row and column moments and its update clipping): what a reduction rule declares.
// The element access the backends hand it is reduce_ref.h. See NOTE: [reduction rules].
#pragma once

#include <cstdint>
#include <type_traits>

#include "genesis/macros.h"
#include "genesis/rules/spec.h"

namespace genesis {

// NOTE: [reduction rules]
// A reduction rule runs Rule::kPasses passes over the tensors of a step. Pass k of a tensor is
// a list of tasks (Rule::tasks). Rule::task says what a task is (TaskInfo): `length` elements,
// visited as `lanes` lanes (at most kLanes): lane j visits the task's elements j, j + lanes,
// j + 2 lanes, ... in that order (round 0, 1, 2, ...; LaneAt), adding what Rule::visit returns
// into its double accumulators (`acc[k]`, k < kMaxSums, whatever type the backend gives; a
// visit adds to each of the task's `sums` exactly once, `acc[k] += v`, which the CPU driver's
// first round turns into a store).
// Then, by its mode, the lanes are combined by a fixed pairwise tree (lane j += lane j + s, for
// s = lanes/2, ..., 1; lanes is a power of two) and handed to Rule::task_done once (Sum), or
// handed over one per lane (Lanes: Adafactor's column sums, one column per lane), or not at all
// (None: a pass that only writes). Rule::coeffs gives each task its numbers (computed once per
// task, from the tensor's scratch). After every task of the pass, Rule::finish runs once per
// tensor (task results combined in task order, the next pass's per-tensor numbers), for the
// passes where Rule::finishes(pass) says it has work (the drivers skip the others' wait and
// launch).
// A task may be several runs (TaskInfo::segments, Sum or None mode): runs of `length` elements
// one after the other (LaneAt::seg), each visited (and tree-combined, and handed to task_done
// with its index in place of the lane) as a task of its own. Lane j visits the same positions of every
// run, in run order, on one thread of either backend, so a rule may also keep per-position
// running sums of its own in the scratch across a task's runs (Adafactor's column sums over a
// tile of rows: the rows' own sums and the columns' in one read of the gradient).
// A Sum task may instead join its runs (TaskInfo::joined): lane j's sums carry on from run to
// run (run 0's elements, then run 1's, ...), one tree at the end, one task_done (index 0),
// for a pass that needs only a total over the runs and not each run's (Adafactor's sums of u^2
// and p^2 over a tile of rows: NOTE: [joined runs] in include/genesis/rules/adafactor.h).
//
// Every sum therefore has one order, fixed by the tensor's shape alone: the CPU (one thread
// runs a task, its lanes interleaved) and CUDA (one block of kLanes threads runs a task) give
// the same bits for any thread count or launch geometry, as the element-wise rules do.
// Per-tensor numbers live in a double scratch array the driver allocates per tensor
// (Rule::scratch_size), in host memory on the CPU and device memory on CUDA (no host sync).
// Neither driver clears it: a rule writes every scratch entry (in begin, a task_done or a
// finish) before any pass reads it.
constexpr int kLanes = 512;
constexpr int64_t kSumChunk = int64_t(1) << 16;  // elements per task of a whole-tensor sum
constexpr int kMaxSums = 2;                      // accumulators per lane

enum class TaskMode { Sum, Lanes, None };

// Width of the lane tree of a task with `length` elements: the smallest power of two >= length,
// at most kLanes.
GENESIS_HD int lane_width(int64_t length) {
  int lanes = 1;
  while (lanes < kLanes && lanes < length) lanes *= 2;
  return lanes;
}

// The sum, in order, of `count` task results `stride` doubles apart: how a tensor's total is
// combined from its tasks' sums (by Rule::finish, the same code on both backends).
GENESIS_HD double sum_in_order(const double* first, int64_t count, int64_t stride = 1) {
  double sum = 0.0;
  for (int64_t k = 0; k < count; ++k) sum += first[k * stride];
  return sum;
}

// `lanes` is a power of two for a Sum task (the tree); a Lanes task may use any count. `kind`
// (0 .. Rule::kKinds - 1) says which of the rule's kinds of task this is (Adafactor: a vector's
// chunk, a matrix row, a block of columns): the CPU driver compiles a lane loop per pass and
// kind, so that each loop is free of the branches between them (GCC vectorizes only those).
// `sums`: how many of the kMaxSums accumulators the task's visits add to (the CPU driver zeroes
// and combines only those).
struct TaskInfo {
  int64_t length;
  int lanes;
  TaskMode mode;
  int kind = 0;
  int sums = kMaxSums;
  int64_t segments = 1;
  bool joined = false;  // Sum mode: the runs' sums are one sum, in run order (one tree)
};

// Where Rule::visit is: element k = round * lanes + lane of run `seg` of a task of kind `kind`.
// Both backends walk the rounds in order, so a rule reads the round and lane instead of dividing
// k by `lanes`. `kept`: the tensor has a kept array (NOTE: [kept values]).
struct LaneAt {
  int64_t k, round;
  int lane, kind;
  bool kept = false;
  int64_t seg = 0;
};

// NOTE: [kept values]
// A rule that computes the same per-element value in two passes (LAMB's update direction u:
// a division and a square root per element) may declare `static constexpr bool kKeepsValue =
// true`: a driver may then hand it an array of one math-type value per element (Ref::kept,
// and LaneAt::kept set), which the first pass fills and a later pass reads instead of
// recomputing. A driver may also not (Ref::kept null, LaneAt::kept false): the rule must
// compute the same bits either way, so what it keeps is exactly what it would recompute. The
// CPU driver keeps values for every group of tensors but those ending in one large tensor
// (csrc/cpu/reduce_driver.h: a bound on the memory it takes); the CUDA driver never does.
template <typename Rule, typename = void>
struct KeepsValue : std::false_type {};
template <typename Rule>
struct KeepsValue<Rule, std::enable_if_t<Rule::kKeepsValue>> : std::true_type {};

// NOTE: [prefetch]
// A task reads its elements from memory, and on some CPUs one thread's hardware prefetchers
// keep too few lines in flight for a read-mostly stream: on the 2-core VM of bench/RESULTS.md
// a loop reading two arrays got 15 GB/s, and 25-27 with a software prefetch of each line 1-2 KB
// ahead (docs/performance.md). A rule may declare `static constexpr bool kPrefetches = true` and
// `static void prefetch(pass, r, c, task, at)`: the CPU driver calls it once per cache line of
// every round, with `at.k` kPrefetchAhead elements past the round's element (at.seg and at.kind
// as for the visit; round and lane are the visit's), and the rule asks for what its visit of that
// element would read (TensorRef::prefetch_p, prefetch_g; a position past the task's end is only
// a hint about memory, never read). The CUDA driver never calls it, nor does the CPU driver on
// CPUs where it slows the reads down (AMD's, measured: NOTE: [prefetch by vendor] in
// csrc/cpu/dispatch.cpp).
constexpr int64_t kPrefetchAhead = 512;
template <typename Rule, typename = void>
struct Prefetches : std::false_type {};
template <typename Rule>
struct Prefetches<Rule, std::enable_if_t<Rule::kPrefetches>> : std::true_type {};

// A whole-tensor sum's task: `length` elements on lane_width(length) lanes, tree-combined.
GENESIS_HD TaskInfo sum_task(int64_t length) { return {length, lane_width(length), TaskMode::Sum}; }

// Shape facts of one tensor of a step, as its rule sees them: numel, and for parameters of two
// or more dimensions the last two (a batch of rows x cols matrices; rows = cols = 0 otherwise).
struct TensorShape {
  int64_t numel, rows, cols;
  GENESIS_HD bool matrix() const { return rows > 0; }
  GENESIS_HD int64_t batch() const { return rows > 0 && cols > 0 ? numel / (rows * cols) : 0; }
};

// Rules whose RuleSpec says kReduction run through the reduction drivers
// (csrc/cpu/reduce_driver.h, csrc/cuda/reduce_kernel.cuh) instead of the element-wise ones.
template <typename Options, typename = void>
struct IsReduction : std::false_type {};
template <typename Options>
struct IsReduction<Options, std::enable_if_t<RuleSpec<Options>::kReduction>> : std::true_type {};

}  // namespace genesis
