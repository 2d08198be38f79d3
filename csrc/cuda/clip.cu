// CUDA global norm (two stages, fixed reduction order), clip scaling read from the device,
// clamping, and GradScaler's unscale-and-check: the reductions behind genesis.nn.utils.
#include <vector>

#include "genesis/cuda.h"
#include "genesis/rules/norm.h"
#include "tensor_table.cuh"

namespace genesis::cuda {

namespace {

// A gradient buffer as the table launcher sees it: one array in slot 0.
struct BufferView {
  const Buffer* buffer;
  int64_t numel;
  void fill(TensorTable& table, int i) const {
    table.ptr[0][i] = buffer->data;
    table.numel[i] = buffer->numel;
  }
};

std::vector<BufferView> views_of(const Buffer* buffers, int64_t count) {
  std::vector<BufferView> views;
  views.reserve(count);
  for (int64_t t = 0; t < count; ++t) views.push_back({&buffers[t], buffers[t].numel});
  return views;
}

int64_t total_chunks(const Buffer* buffers, int64_t count) {
  int64_t chunks = 0;
  for (int64_t t = 0; t < count; ++t) chunks += (buffers[t].numel + kChunk - 1) / kChunk;
  return chunks;
}

// Combines the kThreads values of a block in a fixed tree order (deterministic).
template <typename Op> __device__ double block_combine(const Op& op, double v) {
  __shared__ double lane[kThreads];
  lane[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) lane[threadIdx.x] = op.combine(lane[threadIdx.x], lane[threadIdx.x + half]);
    __syncthreads();
  }
  return lane[0];
}

// Stage 1: block b of this table writes the partial of its chunk to partial[first + b].
template <typename Op, typename S>
__global__ void __launch_bounds__(kThreads) norm_partials(TensorTable table, Op op, double* partial, int64_t first) {
  const int t = table.block_tensor[blockIdx.x];
  const int64_t begin = int64_t(table.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = min(begin + kChunk, table.numel[t]);
  const S* x = static_cast<const S*>(table.ptr[0][t]);
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc = op.combine(acc, op.contribution(load<double>(x[i])));
  const double block = block_combine(op, acc);
  if (threadIdx.x == 0) partial[first + blockIdx.x] = block;
}

// Stage 2: one block combines all partials in index order and finishes the norm.
template <typename Op>
__global__ void __launch_bounds__(kThreads) norm_finish(Op op, const double* partial, int64_t n, double* total) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc = op.combine(acc, partial[i]);
  const double all = block_combine(op, acc);
  if (threadIdx.x == 0) *total = op.finish(all);
}

// Applies fn to every element of a table's chunks; raises *found_inf if a result is not finite.
template <typename S, typename Fn>
__global__ void __launch_bounds__(kThreads) transform(TensorTable table, Fn fn, float* found_inf) {
  using M = MathType<S>;
  if (!fn.active()) return;
  const int t = table.block_tensor[blockIdx.x];
  const int64_t begin = int64_t(table.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = min(begin + kChunk, table.numel[t]);
  S* x = static_cast<S*>(table.ptr[0][t]);
  bool bad = false;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const M y = fn(load<M>(x[i]));
    if (fn.writes()) store(x[i], y);
    bad |= !(y - y == M(0));
  }
  if (bad && found_inf) *found_inf = 1.0f;  // every writer writes the same value
}

// x * min(max_norm / (total + 1e-6), 1), with the total read on the device; no write when the
// coefficient is 1 (as on the CPU). A NaN total scales by NaN, as torch does.
struct ClipByNorm {
  double max_norm;
  const double* total;
  __device__ double coef() const { return max_norm / (*total + 1e-6); }
  __device__ bool active() const { return !(coef() >= 1.0); }
  __device__ bool writes() const { return true; }
  template <typename M> __device__ M operator()(M x) const { return x * M(coef()); }
};

struct Clamp {
  double limit;
  __device__ bool active() const { return true; }
  __device__ bool writes() const { return true; }
  template <typename M> __device__ M operator()(M x) const { return clamp_symmetric(x, M(limit)); }
};

// GradScaler: x * (*factor), or only the check when factor is null.
struct Unscale {
  const float* factor;
  __device__ bool active() const { return true; }
  __device__ bool writes() const { return factor != nullptr; }
  template <typename M> __device__ M operator()(M x) const { return factor ? x * M(*factor) : x; }
};

template <typename Fn>
void transform_all(DType dtype, const Buffer* buffers, int64_t count, Fn fn, float* found_inf, void* stream,
                   const char* op) {
  const std::vector<BufferView> views = views_of(buffers, count);
  dispatch_dtype(dtype, op, [&](auto tag) {
    using S = decltype(tag);
    for_each_table(views.data(), count, [&](const TensorTable& table, int blocks) {
      transform<S><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(table, fn, found_inf);
      check(cudaGetLastError(), op);
    });
  });
}

}  // namespace

void global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count, double* total, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = total_chunks(buffers, count);
  double* partial = nullptr;
  // Stream-ordered allocation: no device-wide synchronization, reused from the pool.
  check(cudaMallocAsync(&partial, sizeof(double) * std::max<int64_t>(chunks, 1), s), "norm workspace");
  const std::vector<BufferView> views = views_of(buffers, count);
  dispatch_dtype(dtype, "global norm", [&](auto tag) {
    using S = decltype(tag);
    dispatch_norm(norm_type, [&](auto op) {
      int64_t first = 0;
      for_each_table(views.data(), count, [&](const TensorTable& table, int blocks) {
        norm_partials<decltype(op), S><<<blocks, kThreads, 0, s>>>(table, op, partial, first);
        check(cudaGetLastError(), "norm launch");
        first += blocks;
      });
      norm_finish<<<1, kThreads, 0, s>>>(op, partial, chunks, total);
      check(cudaGetLastError(), "norm launch");
    });
  });
  check(cudaFreeAsync(partial, s), "norm workspace");
}

void clip_by_norm(double max_norm, const double* total, DType dtype, const Buffer* buffers, int64_t count,
                  void* stream) {
  transform_all(dtype, buffers, count, ClipByNorm{max_norm, total}, nullptr, stream, "clip scale");
}

void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count, void* stream) {
  transform_all(dtype, buffers, count, Clamp{limit}, nullptr, stream, "clip value");
}

void unscale(const float* factor, DType dtype, const Buffer* buffers, int64_t count, float* found_inf,
             void* stream) {
  transform_all(dtype, buffers, count, Unscale{factor}, found_inf, stream, "unscale");
}

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the error, report none
    return 0;
  }
  return n;
}

}  // namespace genesis::cuda
