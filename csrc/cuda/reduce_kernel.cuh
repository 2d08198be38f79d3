// The CUDA driver of the reduction rules (NOTE: [reduction rules] in include/genesis/reduce.h):
// per pass one launch per table whose blocks are the tasks (a block of kLanes threads runs one
// task, thread j its lane j), then one launch of the per-tensor finishes; the per-tensor sums
// stay in device scratch, so nothing waits for the host. The lane order and the tree are the
// CPU driver's (csrc/cpu/reduce_driver.h), and the kernels are built without contraction
// (--fmad=false), so CUDA and CPU give the same bits.
#pragma once

#include <string>
#include <vector>

#include "genesis/reduce_ref.h"
#include "update_kernel.cuh"

namespace genesis::cuda {

static_assert(kLanes == kThreads, "a task's lanes are the threads of one block");
static_assert(kSumChunk == kChunk, "whole-tensor sums use the chunks of the element-wise kernels");

// One tensor of a reduction step on the device.
struct ReduceTensor {
  void* param;
  const void* grad;
  float* master;
  void* state[kMaxStates];
  int64_t numel, rows, cols;
  float* step;
  uint64_t id;
  int64_t scratch_at;  // offset of its scratch in the call's scratch array (doubles)
};

// Up to kReduceTensors tensors of one pass, by value as the kernel argument (as NOTE: [tensor
// tables]); block b runs task first_task[t] + (b - first_block[t]) of the tensor t with
// first_block[t] <= b < first_block[t + 1].
constexpr int kReduceTensors = 128;
struct ReduceTable {
  ReduceTensor tensor[kReduceTensors];
  int64_t first_task[kReduceTensors];
  int32_t first_block[kReduceTensors + 1];
  int count;
};
static_assert(sizeof(ReduceTable) + 1024 <= kKernelArgBytes, "a table must fit the kernel argument limit");

template <typename Rule, typename P, typename S, ParamStore kStore>
__device__ TensorRef<P, S, kStore> ref_of(const ReduceTensor& d, const StepConfig& config, double* scratch) {
  using T = MathType<P>;
  TensorRef<P, S, kStore> r;
  r.param = static_cast<P*>(d.param);
  r.grad = static_cast<const P*>(d.grad);
  r.master = d.master;
  for (int k = 0; k < kMaxStates; ++k) r.state[k] = static_cast<S*>(d.state[k]);
  r.shape = TensorShape{d.numel, d.rows, d.cols};
  r.grad_transform = grad_transform<T>(config);
  r.rng_key = kStore == ParamStore::Stochastic ? stream_key(config.seed, d.id, config.counter) : 0u;
  // The counter advances after every pass has run (advance_steps), so this step is count + 1.
  r.t = Rule::kCountsSteps && d.step ? double(*d.step) + 1.0 : 0.0;
  r.scratch = scratch + d.scratch_at;
  return r;
}

template <typename Rule, typename P, typename S, ParamStore kStore>
__global__ void __launch_bounds__(kThreads)
    reduce_task_kernel(const __grid_constant__ ReduceTable table, const typename Rule::Options options,
                       const StepConfig config, int pass, double* scratch) {
  using Ref = TensorRef<P, S, kStore>;
  using Coeffs = typename Rule::template Coeffs<typename Ref::T>;
  if (config.found_inf && *config.found_inf != 0.0f) return;
  int t = 0;
  while (t + 1 < table.count && table.first_block[t + 1] <= int32_t(blockIdx.x)) ++t;
  const int64_t task = table.first_task[t] + (int64_t(blockIdx.x) - table.first_block[t]);
  const Ref r = ref_of<Rule, P, S, kStore>(table.tensor[t], config, scratch);
  // Coefficients may need pow() in double: one thread computes them for the block.
  __shared__ Coeffs shared;
  __shared__ double lanes[kMaxSums][kLanes];
  if (threadIdx.x == 0) shared = Rule::coeffs(pass, options, r, task);
  __syncthreads();
  const Coeffs c = shared;
  const TaskInfo info = Rule::task(pass, r.shape, task);
  const int64_t length = info.length;
  const TaskMode mode = info.mode;
  const int width = info.lanes;
  const int j = threadIdx.x;
  // A Sum or None task may be several runs, one after the other (TaskInfo::segments); a joined
  // task's runs add to one set of sums, combined after its last run.
  const int64_t segments = mode == TaskMode::Lanes ? 1 : info.segments;
  double acc[kMaxSums];
  for (int64_t seg = 0; seg < segments; ++seg) {
    if (seg == 0 || !info.joined)
      for (int k = 0; k < kMaxSums; ++k) acc[k] = 0.0;
    // Unrolled so that a sum pass (no stores) issues several elements' loads before the first
    // add; the adds stay in the same order, so the bits do not change.
    if (j < width)
#pragma unroll 4
      for (int64_t k = j, round = 0; k < length; k += width, ++round)
        Rule::visit(pass, options, r, c, task, LaneAt{k, round, j, info.kind, false, seg}, acc);
    if (mode == TaskMode::Lanes) {
      if (j < width) Rule::task_done(pass, r, task, j, acc);
    } else if (mode == TaskMode::Sum && (!info.joined || seg + 1 == segments)) {
      for (int k = 0; k < kMaxSums; ++k) lanes[k][j] = acc[k];
      __syncthreads();
      for (int s = width / 2; s > 0; s /= 2) {
        if (j < s)
          for (int k = 0; k < kMaxSums; ++k) lanes[k][j] += lanes[k][j + s];
        __syncthreads();
      }
      if (j == 0) {
        double sum[kMaxSums];
        for (int k = 0; k < kMaxSums; ++k) sum[k] = lanes[k][0];
        Rule::task_done(pass, r, task, info.joined ? 0 : int(seg), sum);
      }
      __syncthreads();  // lane 0 has read the tree before the next run refills it
    }
  }
}

// Per-tensor work between passes: Rule::begin (pass -1) or Rule::finish(pass), one thread each.
template <typename Rule, typename P, typename S, ParamStore kStore>
__global__ void reduce_tensor_kernel(const __grid_constant__ ReduceTable table, const typename Rule::Options options,
                                     const StepConfig config, int pass, double* scratch) {
  if (config.found_inf && *config.found_inf != 0.0f) return;
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= table.count) return;
  const auto r = ref_of<Rule, P, S, kStore>(table.tensor[t], config, scratch);
  if (pass < 0) {
    Rule::begin(options, r);
  } else {
    Rule::finish(pass, options, r);
  }
}

template <typename Rule, typename P, typename S, ParamStore kStore>
void launch_reduction(const char* op, const typename Rule::Options& options, const StepConfig& config,
                      const TensorSlots* tensors, int64_t count, cudaStream_t stream) {
  std::vector<ReduceTensor> all(count);
  int64_t scratch_size = 0;
  for (int64_t t = 0; t < count; ++t) {
    const TensorSlots& ts = tensors[t];
    if (Rule::kCountsSteps && !ts.step)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + " has no step counter");
    ReduceTensor& d = all[t];
    d.param = ts.param;
    d.grad = ts.grad;
    d.master = ts.master;
    for (int k = 0; k < kMaxStates; ++k) d.state[k] = ts.state[k];
    d.numel = ts.numel;
    d.rows = ts.rows;
    d.cols = ts.cols;
    d.step = ts.step;
    d.id = ts.id;
    d.scratch_at = scratch_size;
    scratch_size += Rule::scratch_size(TensorShape{ts.numel, ts.rows, ts.cols});
  }
  // Stream-ordered scratch: allocated and freed on the stream, no host synchronization (and
  // capturable in a CUDA graph as allocation nodes).
  double* scratch = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&scratch),
                        size_t(scratch_size > 0 ? scratch_size : 1) * sizeof(double), stream),
        "reduction scratch");
  // Tables of up to kReduceTensors tensors; a pass's blocks are its tasks.
  auto for_each_table = [&](int pass, auto&& launch) {
    for (int64_t first = 0; first < count; first += kReduceTensors) {
      ReduceTable table{};
      table.count = int(std::min<int64_t>(kReduceTensors, count - first));
      int64_t blocks = 0;
      for (int i = 0; i < table.count; ++i) {
        table.tensor[i] = all[first + i];
        table.first_task[i] = 0;
        table.first_block[i] = int32_t(blocks);
        if (pass >= 0)
          blocks += Rule::tasks(pass, TensorShape{all[first + i].numel, all[first + i].rows, all[first + i].cols});
      }
      table.first_block[table.count] = int32_t(blocks);
      if (blocks >= (int64_t(1) << 31)) throw std::invalid_argument(std::string(op) + ": too many tasks in one launch");
      launch(table, blocks);
      check(cudaGetLastError(), op);
    }
  };
  auto per_tensor = [&](int pass) {
    for_each_table(-1, [&](const ReduceTable& table, int64_t) {
      reduce_tensor_kernel<Rule, P, S, kStore>
          <<<(table.count + 127) / 128, 128, 0, stream>>>(table, options, config, pass, scratch);
    });
  };
  per_tensor(-1);
  for (int pass = 0; pass < Rule::kPasses; ++pass) {
    for_each_table(pass, [&](const ReduceTable& table, int64_t blocks) {
      if (blocks > 0)
        reduce_task_kernel<Rule, P, S, kStore>
            <<<unsigned(blocks), kThreads, 0, stream>>>(table, options, config, pass, scratch);
    });
    if (Rule::finishes(pass)) per_tensor(pass);
  }
  for (const StepList& list : build_step_lists(tensors, count)) {
    advance_steps<Rule><<<(list.count + 127) / 128, 128, 0, stream>>>(list, config.found_inf, options);
    check(cudaGetLastError(), "step counters (the parameters and state were updated)");
  }
  check(cudaFreeAsync(scratch, stream), "reduction scratch");
}

// One step of the reduction rule whose options these are, on the device that holds the tensors.
template <typename Options>
void run_reduction_rule(const Options& options, const StepConfig& config, const TensorSlots* tensors, int64_t count,
                        void* stream) {
  using Spec = RuleSpec<Options>;
  const std::string op = std::string(Spec::name(options)) + " step";
  if (count == 0) return;
  const DeviceGuard guard(stream, device_pointer(tensors, count));
  Spec::select(options, [&](auto rule) {
    dispatch_storage(op.c_str(), config, [&](auto param, auto state, auto store) {
      launch_reduction<decltype(rule), decltype(param), decltype(state), decltype(store)::value>(
          op.c_str(), options, config, tensors, count, static_cast<cudaStream_t>(stream));
    });
  });
}

// The driver a rule of rules/list.h runs on: element-wise (update_kernel.cuh) or reduction.
template <typename Options>
void run_any_rule(const Options& options, const StepConfig& config, const TensorSlots* tensors, int64_t count,
                  void* stream) {
  if constexpr (IsReduction<Options>::value) {
    run_reduction_rule(options, config, tensors, count, stream);
  } else {
    run_rule(options, config, tensors, count, stream);
  }
}

}  // namespace genesis::cuda
