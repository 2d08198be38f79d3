// CUDA global norm (two stages, fixed reduction order), clip scaling read from the device,
// clamping, and GradScaler's unscale-and-check: the reductions behind genesis.nn.utils.
#include <vector>

#include "genesis/cuda.h"
#include "genesis/rules/norm.h"
#include "tensor_table.cuh"

namespace genesis::cuda {

namespace {

template <typename S>
struct alignas(sizeof(S) * kVec) Pack {
  S v[kVec];
};

std::vector<BufferTensor> views_of(const Buffer* buffers, int64_t count, int elem_bytes) {
  std::vector<BufferTensor> views;
  views.reserve(count);
  for (int64_t t = 0; t < count; ++t) views.push_back({&buffers[t], elem_bytes});
  return views;
}

// Combines the kThreads values of a block in a fixed tree order (deterministic).
template <typename Op>
__device__ double block_combine(const Op& op, double v) {
  __shared__ double lane[kThreads];
  lane[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) lane[threadIdx.x] = op.combine(lane[threadIdx.x], lane[threadIdx.x + half]);
    __syncthreads();
  }
  return lane[0];
}

// The CPU's order (NOTE: [norm order]) is this kernel's geometry.
static_assert(kChunk == kNormChunk && kThreads == kNormValues && kVec == kNormLaneGroup,
              "the norm's order is the CPU's");

// Stage 1: block b of this table writes the partial of its chunk to partial[first + b]. Thread
// x keeps the accumulators of lanes kVec x ... kVec x + kVec - 1 (independent adds in flight)
// and combines them in lane order; then the tree: NOTE: [norm order], so the CPU's bits.
template <typename Op, typename S>
__global__ void __launch_bounds__(kThreads)
    norm_partials(const __grid_constant__ TensorTable table, Op op, double* partial, int64_t first) {
  const BlockRange r = block_range(table, blockIdx.x);
  const S* x = static_cast<const S*>(table.ptr[0][r.tensor]) + r.begin;
  const int64_t len = r.end - r.begin, packed = r.packs_end - r.begin;
  double acc[kVec] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t o = int64_t(threadIdx.x) * kVec; o < packed; o += kNormLanes) {
    const Pack<S> p = *reinterpret_cast<const Pack<S>*>(x + o);
#pragma unroll
    for (int k = 0; k < kVec; ++k) acc[k] = op.combine(acc[k], op.contribution(load<double>(p.v[k])));
  }
  // The rest (all of an unaligned tensor, the last few elements of an aligned one) one element
  // at a time, each into the accumulator of its lane, after the lane's packed elements.
  for (int64_t o = packed / kNormLanes * kNormLanes + int64_t(threadIdx.x) * kVec; o < len; o += kNormLanes)
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      if (o + k >= packed && o + k < len) acc[k] = op.combine(acc[k], op.contribution(load<double>(x[o + k])));
  double mine = acc[0];
#pragma unroll
  for (int k = 1; k < kVec; ++k) mine = op.combine(mine, acc[k]);
  const double block = block_combine(op, mine);
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
// fn.scalar() (the clip coefficient, the limit, the unscale factor) is read from the device
// and computed once per block, then applied in the elements' math type.
template <typename S, typename Fn>
__global__ void __launch_bounds__(kThreads)
    transform(const __grid_constant__ TensorTable table, Fn fn, float* found_inf) {
  using M = MathType<S>;
  __shared__ double scalar;
  if (threadIdx.x == 0) scalar = fn.scalar();
  __syncthreads();
  if (!Fn::active(scalar)) return;
  const M s = M(scalar);
  const BlockRange r = block_range(table, blockIdx.x);
  S* x = static_cast<S*>(table.ptr[0][r.tensor]);
  const bool writes = fn.writes();
  bool bad = false;
  for (int64_t i = r.begin + int64_t(threadIdx.x) * kVec; i < r.packs_end; i += int64_t(kThreads) * kVec) {
    Pack<S> p = *reinterpret_cast<const Pack<S>*>(x + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const M y = Fn::apply(load<M>(p.v[k]), s);
      store(p.v[k], y);
      bad |= !(y - y == M(0));
    }
    if (writes) *reinterpret_cast<Pack<S>*>(x + i) = p;
  }
  for (int64_t i = r.packs_end + threadIdx.x; i < r.end; i += kThreads) {
    const M y = Fn::apply(load<M>(x[i]), s);
    if (writes) store(x[i], y);
    bad |= !(y - y == M(0));
  }
  if (bad && found_inf) *found_inf = 1.0f;  // every writer writes the same value
}

// x * min(max_norm / (total + 1e-6), 1), with the total read on the device; no write when the
// coefficient is 1 (as on the CPU). A NaN total scales by NaN, as torch does.
struct ClipByNorm {
  double max_norm;
  const double* total;
  __device__ double scalar() const { return max_norm / (*total + 1e-6); }
  __device__ static bool active(double coef) { return !(coef >= 1.0); }
  __device__ bool writes() const { return true; }
  template <typename M>
  __device__ static M apply(M x, M coef) {
    return x * coef;
  }
};

struct Clamp {
  double limit;
  __device__ double scalar() const { return limit; }
  __device__ static bool active(double) { return true; }
  __device__ bool writes() const { return true; }
  template <typename M>
  __device__ static M apply(M x, M limit) {
    return clamp_symmetric(x, limit);
  }
};

// GradScaler: x * (*factor), or only the check when factor is null (a factor of 1 is exact).
struct Unscale {
  const float* factor;
  __device__ double scalar() const { return factor ? double(*factor) : 1.0; }
  __device__ static bool active(double) { return true; }
  __device__ bool writes() const { return factor != nullptr; }
  template <typename M>
  __device__ static M apply(M x, M factor) {
    return x * factor;
  }
};

template <typename Fn>
void transform_all(DType dtype, const Buffer* buffers, int64_t count, Fn fn, float* found_inf, void* stream,
                   const char* op) {
  const DeviceGuard guard(stream, device_pointer(buffers, count));
  dispatch_dtype(dtype, op, [&](auto tag) {
    using S = decltype(tag);
    const std::vector<BufferTensor> views = views_of(buffers, count, int(sizeof(S)));
    launch_tables(build_tables(views.data(), count), op, [&](const TensorTable& table, int blocks) {
      transform<S><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(table, fn, found_inf);
    });
  });
}

}  // namespace

int64_t norm_workspace_size(const Buffer* buffers, int64_t count) {
  int64_t chunks = 0;
  for (int64_t t = 0; t < count; ++t) chunks += (buffers[t].numel + kChunk - 1) / kChunk;
  return std::max<int64_t>(chunks, 1);
}

void global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count, double* total, double* workspace,
                 void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const DeviceGuard guard(stream, total);
  dispatch_dtype(dtype, "global norm", [&](auto tag) {
    using S = decltype(tag);
    const std::vector<BufferTensor> views = views_of(buffers, count, int(sizeof(S)));
    const std::vector<BuiltTable> tables = build_tables(views.data(), count);
    dispatch_norm(norm_type, [&](auto op) {
      int64_t first = 0;
      launch_tables(tables, "global norm", [&](const TensorTable& table, int blocks) {
        norm_partials<decltype(op), S><<<blocks, kThreads, 0, s>>>(table, op, workspace, first);
        first += blocks;
      });
      norm_finish<<<1, kThreads, 0, s>>>(op, workspace, first, total);
      check(cudaGetLastError(), "global norm");
    });
  });
}

void clip_by_norm(double max_norm, const double* total, DType dtype, const Buffer* buffers, int64_t count,
                  void* stream) {
  transform_all(dtype, buffers, count, ClipByNorm{max_norm, total}, nullptr, stream, "clip scale");
}

void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count, void* stream) {
  transform_all(dtype, buffers, count, Clamp{limit}, nullptr, stream, "clip value");
}

void unscale(const float* factor, DType dtype, const Buffer* buffers, int64_t count, float* found_inf, void* stream) {
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
