// Adafactor (Shazeer & Stern 2018), as torch.optim.Adafactor computes it: factored row and
// column second moments for parameters of two or more dimensions (a batch of rows x cols
// matrices, the last two dimensions), a full second moment for the others, relative step
// size, update clipping. A reduction rule: see NOTE: [reduction rules] in
// include/genesis/reduce.h; docs/architecture.md counts its passes over memory.
#pragma once

#include <cmath>
#include <optional>

#include "genesis/reduce.h"
#include "genesis/rules/lerp.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"

namespace genesis {

struct AdafactorOptions {
  double lr = 1e-2;
  double beta2_decay = -0.8;
  std::optional<double> eps1;  // none: the parameter dtype's machine epsilon (torch's default)
  double eps2 = 1e-3;
  double d = 1.0;
  double weight_decay = 0.0;
  bool maximize = false;
};

template <typename T>
struct AdafactorCoeffs {
  T w;  // 1 - beta2_t = t^beta2_decay, the weight of this step's squares
  T eps1, eps1_sq, sign;
  T decay;     // 1 - lr * weight_decay; 1 without weight decay, whatever lr (NOTE: [lr = inf])
  T step;      // -alpha / denom (pass 3)
  T inv_eps1;  // 1 / eps1, the largest factor 1 / sqrt(max(var, eps1^2)) can be
  // Of the task (a tile of rows of matrix b of the batch, or a block of its columns), computed
  // once per task (the offsets need divisions):
  // passes 0, 2, 3: the tile's first element; pass 1: the block's first partial column sum
  int64_t first;
  // pass 0: where the tile's partial column sums go in the scratch; passes 2, 3: where the
  // column factors of matrix b are
  int64_t part;
  int64_t row_factors;  // passes 2, 3: where the tile's row factors are in the scratch
};

// Four passes for a matrix, two for a vector (docs/performance.md counts what they move):
//   matrix, pass 0: tiles of consecutive rows (tile_rows, about kSumChunk elements), a run per
//           row: per row the sum of g^2 (a lane tree), and per column of the tile
//           the sum of g^2 down its rows (lane j owns columns j, j + lanes, ... of every row:
//           NOTE: [reduction rules] on runs), kept in the scratch. A row's task_done updates
//           its row_var (lerp towards the mean); finish(0) takes each matrix's row_var mean.
//           pass 1: per column, its tiles' sums in tile order (tasks of kLanes columns, a lane
//           per column; only the scratch is read). A column's task_done updates its col_var and
//           keeps its factor (below) in place of its sum. (The per-row and per-column work is
//           in task_done, which the tasks' threads share, rather than in the finish, which one
//           thread runs per tensor.)
//           Its tasks of rows (a lane per row, no elements) keep each row's factor (below).
//           pass 2: per tile the sums of u^2, u = g / sqrt(max(row_var * col_var / mean, eps1^2)),
//           and of p^2 (NOTE: [p^2 in pass 2]), its rows joined (NOTE: [joined runs]);
//           finish(2) takes alpha and the clipping.
//           pass 3: p = p * (1 - lr wd) - alpha / max(1, RMS(u) / d) * u.
//           Passes 2 and 3 run on the tiles of pass 0, a run per row.
//           In passes 2 and 3, u = min(row_factor * col_factor, 1 / eps1) * g, with
//           row_factor = sqrt(mean / row_var) per row and
//           col_factor = 1 / sqrt(col_var) per column: the same number up to rounding (a few
//           units in the last place; 1/sqrt is decreasing, so the clamp of var at eps1^2
//           becomes the min). Per element that is two products and a min instead of torch's
//           two divisions and a square root, which made both passes bound by arithmetic, not
//           memory (docs/performance.md).
//   vector, pass 0 (chunks): variance updated and stored; sums of p^2 and u^2.
//           pass 3 (chunks): as for a matrix. Passes 1 and 2 have no tasks.
//
// NOTE: [p^2 in pass 2]
// A matrix's sum of p^2 (its RMS scales the step) can be taken in pass 0 or in pass 2: p does
// not change before pass 3. On the CPU pass 0 is the pass that reads from memory (the later
// ones find the tile in the cache: NOTE: [cache-blocked passes] in csrc/cpu/reduce_driver.h),
// and there the reads alone set the pace: on the Zen 4 VM of bench/RESULTS.md two threads
// reading one array or two moved 33-35 GB/s, while read-modify-writes moved 46-64. Pass 2
// reads g from the cache and has u^2's arithmetic to overlap with a stream from memory. So
// pass 0 reads g alone and pass 2 reads p: the same bytes, the same sums in the same lanes and
// order (the same bits, on both backends). 50 x 1000 x 1000 float32, 2 threads, five
// alternating pairs: 27.3-28.7 -> 24.6-25.7 ms per step (medians; docs/performance.md).
//
// NOTE: [joined runs]
// Pass 2 needs only each matrix's totals of u^2 and p^2, not a row's: its tasks join their
// rows (TaskInfo::joined), so that lane j adds the elements j, j + lanes, ... of every row of
// the tile in row order and one lane tree per tile and sum combines them. With a tree per row
// (until 2026-12-06) a 1000-column row paid two 512-lane trees for its 1000 elements; a tree
// costs about as much as loading its 4 KB of lanes, and joining took about a tenth off a step
// over 1000 x 1000 matrices (docs/performance.md). A total's order is still fixed by the shape
// alone (tiles, then the tile's tree), the same on both backends.
//
// Scratch per tensor: the kHead numbers below; then for a matrix of N = B*R rows, M = B*C
// columns and Q = B*tiles tiles: M column sums (then factors), B means, 2Q tile sums (u^2,
// p^2), Q*C partial column sums, N row factors; for a vector: two partial sums per chunk.
enum AdafactorScratch { kSumP2, kSumU2, kWeight, kEps1, kStep, kHead };
struct AdafactorRule {
  static constexpr int kStates = 2;  // row_var, col_var; or variance
  static constexpr int kPasses = 4;
  // Kinds of task (TaskInfo::kind): a vector's chunk, a tile of matrix rows (passes 0, 2, 3),
  // a block of matrix columns or rows (pass 1).
  enum Kind { kChunk, kRow, kColumns };
  static constexpr int kKinds = 3;
  static constexpr bool kCountsSteps = true;
  using Options = AdafactorOptions;
  template <typename T>
  using Coeffs = AdafactorCoeffs<T>;

  GENESIS_HD static int64_t chunks(const TensorShape& s) { return (s.numel + kSumChunk - 1) / kSumChunk; }
  GENESIS_HD static int64_t nrows(const TensorShape& s) { return s.batch() * s.rows; }
  // Rows per tile of pass 0 (the last tile of a matrix may have fewer) and tiles per matrix:
  // as few tiles as keep each at most kSumChunk elements (or one row), their rows shared out
  // evenly, so that threads splitting a matrix's tiles get equal work (NOTE: [task affinity]
  // in csrc/cpu/reduce_driver.h; 1000 rows are 15 x 63 + 55, not 15 x 65 + 25).
  GENESIS_HD static int64_t tile_rows(const TensorShape& s) {
    const int64_t most = s.cols > 0 && kSumChunk / s.cols > 1 ? kSumChunk / s.cols : 1;
    if (s.rows <= most) return s.rows;
    const int64_t count = (s.rows + most - 1) / most;
    return (s.rows + count - 1) / count;
  }
  GENESIS_HD static int64_t tiles(const TensorShape& s) { return (s.rows + tile_rows(s) - 1) / tile_rows(s); }
  // The first row (of all the batch's rows) of tile `task` (passes 0, 2, 3): tile q of matrix b.
  GENESIS_HD static int64_t tile_first_row(const TensorShape& s, int64_t task) {
    return (task / tiles(s)) * s.rows + (task % tiles(s)) * tile_rows(s);
  }
  // Column blocks of kLanes columns: per matrix, and in the whole batch.
  GENESIS_HD static int64_t blocks(const TensorShape& s) { return (s.cols + kLanes - 1) / kLanes; }
  GENESIS_HD static int64_t col_blocks(const TensorShape& s) { return s.batch() * blocks(s); }
  // Scratch offsets (matrix).
  GENESIS_HD static int64_t col_at(const TensorShape&) { return kHead; }
  GENESIS_HD static int64_t mean_at(const TensorShape& s) { return col_at(s) + s.batch() * s.cols; }
  GENESIS_HD static int64_t tile_at(const TensorShape& s) { return mean_at(s) + s.batch(); }
  GENESIS_HD static int64_t part_at(const TensorShape& s) { return tile_at(s) + 2 * s.batch() * tiles(s); }
  GENESIS_HD static int64_t rowf_at(const TensorShape& s) { return part_at(s) + s.batch() * tiles(s) * s.cols; }
  // Pass 1's blocks of kLanes rows (of all the batch's rows), after its column blocks.
  GENESIS_HD static int64_t row_blocks(const TensorShape& s) { return (nrows(s) + kLanes - 1) / kLanes; }

  GENESIS_HD static int64_t scratch_size(const TensorShape& s) {
    return s.matrix() ? rowf_at(s) + nrows(s) : kHead + 2 * chunks(s);
  }
  GENESIS_HD static int64_t tasks(int pass, const TensorShape& s) {
    if (!s.matrix()) return pass == 0 || pass == 3 ? chunks(s) : 0;
    return pass == 1 ? col_blocks(s) + row_blocks(s) : s.batch() * tiles(s);
  }
  // Lanes of column block `block` (of a matrix's blocks of kLanes columns): one per column, the
  // last block only as many as it has columns.
  GENESIS_HD static int block_lanes(const TensorShape& s, int64_t block) {
    const int64_t rest = s.cols - block * kLanes;
    return rest < kLanes ? int(rest) : kLanes;
  }
  GENESIS_HD static TaskInfo task(int pass, const TensorShape& s, int64_t task) {
    TaskInfo info;
    if (!s.matrix()) {
      const int64_t rest = s.numel - task * kSumChunk;
      info = sum_task(rest < kSumChunk ? rest : kSumChunk);
    } else if (pass == 1 && task >= col_blocks(s)) {  // rows: a lane each, nothing to visit
      const int64_t rest = nrows(s) - (task - col_blocks(s)) * kLanes;
      const int lanes = rest < kLanes ? int(rest) : kLanes;
      info = {0, lanes, TaskMode::Lanes, kColumns, 1};
    } else if (pass == 1) {
      const int lanes = block_lanes(s, task % blocks(s));
      info = {tiles(s) * lanes, lanes, TaskMode::Lanes, kColumns, 1};
    } else {  // a tile: its rows are the task's runs
      info = sum_task(s.cols);
      info.kind = kRow;
      info.sums = pass == 0 ? 1 : 2;
      const int64_t rest = s.rows - (task % tiles(s)) * tile_rows(s);
      info.segments = rest < tile_rows(s) ? rest : tile_rows(s);
      info.joined = pass == 2;  // NOTE: [joined runs]
    }
    if (pass == 3) info.mode = TaskMode::None;
    return info;
  }

  template <typename Ref>
  GENESIS_HD static Coeffs<typename Ref::T> coeffs(int pass, const AdafactorOptions& o, const Ref& r, int64_t task) {
    using T = typename Ref::T;
    const TensorShape& s = r.shape;
    const double* scratch = r.scratch;
    const double eps1 = scratch[kEps1];
    Coeffs<T> c{T(scratch[kWeight]),
                T(eps1),
                T(eps1 * eps1),
                T(o.maximize ? -1.0 : 1.0),
                T(o.weight_decay == 0.0 ? 1.0 : 1.0 - o.lr * o.weight_decay),
                T(scratch[kStep]),
                T(1.0 / eps1),
                0,
                0,
                0};
    if (!s.matrix()) return c;
    if (pass == 1) {  // column block k of matrix b (a row block visits nothing)
      const int64_t b = task / blocks(s), k = task % blocks(s);
      if (task < col_blocks(s)) c.first = part_at(s) + b * tiles(s) * s.cols + k * kLanes;
      return c;
    }
    const int64_t row = tile_first_row(s, task);
    c.first = row * s.cols;
    c.part = pass == 0 ? part_at(s) + task * s.cols : col_at(s) + (task / tiles(s)) * s.cols;
    c.row_factors = rowf_at(s) + row;
    return c;
  }

  // u for the element in column `col` of the tile's row `seg` (torch: g * rsqrt(max((row_var @
  // col_var) / mean, eps1^2))), from the row's and the column's factor. The min propagates NaN.
  template <typename Ref, typename T>
  GENESIS_HD static T matrix_update(const Ref& r, const Coeffs<T>& c, int64_t seg, int64_t col, T g) {
    const T f = T(r.scratch[c.row_factors + seg]) * T(r.scratch[c.part + col]);
    return (f > c.inv_eps1 ? c.inv_eps1 : f) * g;
  }

  template <typename Ref, typename T, typename Acc>
  GENESIS_HD static void visit(int pass, const AdafactorOptions&, const Ref& r, const Coeffs<T>& c, int64_t task,
                               LaneAt at, Acc acc) {
    const TensorShape& s = r.shape;
    if (at.kind == kChunk) {
      const int64_t i = task * kSumChunk + at.k;
      const T p = r.p(i), g = c.sign * r.g(i);
      T var = pass == 0 ? r.set_s(0, i, torch_lerp(r.s(0, i), g * g, c.w)) : r.s(0, i);
      var = var < c.eps1_sq ? c.eps1_sq : var;
      const T u = T(1) / std::sqrt(var) * g;
      if (pass == 0) {
        acc[0] += double(p) * double(p);
        acc[1] += double(u) * double(u);
      } else {
        apply(r, c, i, p, u);
      }
      return;
    }
    if (at.kind == kColumns) {  // a lane per column, a round per tile
      acc[0] += r.scratch[c.first + at.round * s.cols + at.lane];
      return;
    }
    const int64_t k = at.k, i = c.first + at.seg * s.cols + k;  // column k of the tile's row seg
    const T g = c.sign * r.g(i);
    if (pass == 0) {
      const double g2 = double(g) * double(g);
      acc[0] += g2;
      double& column = r.scratch[c.part + k];  // this lane's column of the tile, row after row
      column = (at.seg == 0 ? 0.0 : column) + g2;
    } else if (pass == 2) {  // (NOTE: [p^2 in pass 2])
      const T u = matrix_update(r, c, at.seg, k, g), p = r.p(i);
      acc[0] += double(u) * double(u);
      acc[1] += double(p) * double(p);
    } else {
      apply(r, c, i, r.p(i), matrix_update(r, c, at.seg, k, g));
    }
  }

  // NOTE: [prefetch]: the elements each pass reads (the scratch and the state stay in cache).
  static constexpr bool kPrefetches = true;
  template <typename Ref, typename T>
  GENESIS_HD static void prefetch(int pass, const Ref& r, const Coeffs<T>& c, int64_t task, LaneAt at) {
    if (at.kind == kColumns) return;
    const int64_t i = at.kind == kChunk ? task * kSumChunk + at.k : c.first + at.seg * r.shape.cols + at.k;
    r.prefetch_g(i);
    if (pass != 0 || at.kind == kChunk) r.prefetch_p(i);
  }

  // p = p * (1 - lr wd) (when wd != 0, a separate rounding as torch's mul_), then p + step * u.
  //
  // NOTE: [lr = inf]
  // Adafactor's step size is min(lr, 1 / sqrt(t)) (times the parameter's RMS), so lr = inf
  // gives the paper's relative step size rho_t = 1 / sqrt(t), which torch's constructor accepts.
  // torch multiplies by 1 - lr * wd only when wd != 0; computed unconditionally, inf * 0 would
  // make the factor NaN and every parameter with it.
  template <typename Ref, typename T>
  GENESIS_HD static void apply(const Ref& r, const Coeffs<T>& c, int64_t i, T p, T u) {
    if (c.decay != T(1)) p = p * c.decay;
    r.set_p(i, p + c.step * u);
  }

  // `lane`: the tile's row (pass 0), the block's column or row (pass 1); pass 2's tiles are one
  // sum each (NOTE: [joined runs]).
  template <typename Ref>
  GENESIS_HD static void task_done(int pass, const Ref& r, int64_t task, int lane, const double* acc) {
    const TensorShape& s = r.shape;
    if (!s.matrix()) {  // a chunk's two sums
      r.scratch[kHead + 2 * task] = acc[0];
      r.scratch[kHead + 1 + 2 * task] = acc[1];
    } else if (pass != 1) {
      if (pass == 2) {  // a tile's sums of u^2 and p^2
        r.scratch[tile_at(s) + 2 * task] = acc[0];
        r.scratch[tile_at(s) + 2 * task + 1] = acc[1];
        return;
      }
      const int64_t row = tile_first_row(s, task) + lane;  // a row's row_var, from its sum of g^2
      using T = typename Ref::T;
      r.set_s(0, row, torch_lerp(r.s(0, row), T(acc[0] / double(s.cols)), T(r.scratch[kWeight])));
    } else if (task >= col_blocks(s)) {  // a row's factor (its task has no elements)
      const int64_t row = (task - col_blocks(s)) * kLanes + lane;
      r.scratch[rowf_at(s) + row] = std::sqrt(r.scratch[mean_at(s) + row / s.rows] / double(r.s(0, row)));
    } else {  // a column's col_var, and its factor
      using T = typename Ref::T;
      const int64_t q = (task / blocks(s)) * s.cols + (task % blocks(s)) * kLanes + lane;
      const T var = r.set_s(1, q, torch_lerp(r.s(1, q), T(acc[0] / double(s.rows)), T(r.scratch[kWeight])));
      r.scratch[col_at(s) + q] = 1.0 / std::sqrt(double(var));
    }
  }

  // Per tensor before pass 0: this step's weight and eps1 (by default the parameter dtype's
  // machine epsilon, as torch's torch.finfo(param.dtype).eps).
  template <typename Ref>
  GENESIS_HD static void begin(const AdafactorOptions& o, const Ref& r) {
    r.scratch[kWeight] = portable_pow(r.t, o.beta2_decay);
    r.scratch[kEps1] = o.eps1 ? *o.eps1 : Ref::kParamEpsilon;
  }

  GENESIS_HD static constexpr bool finishes(int pass) { return pass == 0 || pass == 2; }
  template <typename Ref>
  GENESIS_HD static void finish(int pass, const AdafactorOptions& o, const Ref& r) {
    const TensorShape& s = r.shape;
    if (s.numel == 0) return;
    double* scratch = r.scratch;
    using T = typename Ref::T;
    if (pass == 2) {  // every sum is in: the step size of pass 3, once per tensor
      if (s.matrix()) {
        scratch[kSumU2] = sum_in_order(scratch + tile_at(s), s.batch() * tiles(s), 2);
        scratch[kSumP2] = sum_in_order(scratch + tile_at(s) + 1, s.batch() * tiles(s), 2);
      }
      const double rho = std::fmin(o.lr, 1.0 / std::sqrt(r.t));
      const double root_n = std::sqrt(double(s.numel));
      const double alpha = std::fmax(o.eps2, std::sqrt(scratch[kSumP2]) / root_n) * rho;
      const double denom = std::fmax(1.0, std::sqrt(scratch[kSumU2]) / (root_n * o.d));
      scratch[kStep] = -alpha / denom;
    } else if (!s.matrix()) {
      if (pass == 0) {
        scratch[kSumP2] = sum_in_order(scratch + kHead, chunks(s), 2);
        scratch[kSumU2] = sum_in_order(scratch + kHead + 1, chunks(s), 2);
      }
    } else {  // pass 0: each matrix's row_var mean
      for (int64_t b = 0; b < s.batch(); ++b) {
        double sum = 0.0;
        for (int64_t q = b * s.rows; q < (b + 1) * s.rows; ++q) sum += double(r.s(0, q));
        const T mean = T(sum / double(s.rows));
        const T eps1 = T(scratch[kEps1]);
        scratch[mean_at(s) + b] = double(mean < eps1 ? eps1 : mean);
      }
    }
  }
};

template <>
struct RuleSpec<AdafactorOptions> {
  static constexpr bool kCountsSteps = true;
  static constexpr bool kReduction = true;
  static const char* name(const AdafactorOptions&) { return "Adafactor"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("beta2_decay", o.beta2_decay);
    f("eps", o.eps1, o.eps2);
    f("d", o.d);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const AdafactorOptions&) { return {"row_var", "col_var", "variance"}; }
  // torch's layout: row_var (shape[-1] = 1) and col_var (shape[-2] = 1) for two or more
  // dimensions, else variance (the parameter's shape).
  static std::vector<StateArray> state_arrays(const AdafactorOptions&, const std::vector<int64_t>& shape) {
    if (shape.size() < 2) return {{"variance", shape}};
    std::vector<int64_t> row = shape, col = shape;
    row[row.size() - 1] = 1;
    col[col.size() - 2] = 1;
    return {{"row_var", row}, {"col_var", col}};
  }
  // torch's messages.
  static void validate(const AdafactorOptions& o) {
    auto check = [](bool ok, const std::string& what, double v) {
      if (!ok) throw std::invalid_argument(what + detail::float_repr(v));
    };
    check(0.0 <= o.lr, "Learning rate should be >= 0 but is: ", o.lr);
    check(0.0 >= o.beta2_decay, "beta2_decay should be <= 0 but is: ", o.beta2_decay);
    if (o.eps1) check(0.0 <= *o.eps1, "epsilon1 should be >= 0 but is: ", *o.eps1);
    check(0.0 <= o.eps2, "epsilon2 should be >= 0 but is: ", o.eps2);
    check(1.0 <= o.d, "Clipping threshold d should be >= 1 but is: ", o.d);
    check(0.0 <= o.weight_decay, "weight_decay should be >= 0 but is: ", o.weight_decay);
  }
  template <typename F>
  static void select(const AdafactorOptions&, F&& f) {
    f(AdafactorRule{});
  }
};

}  // namespace genesis
