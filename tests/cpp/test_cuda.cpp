// The CUDA kernels against the CPU core on the same inputs: every rule, 16-bit storage, master
// weights, stochastic rounding, the skipped step, and the clip reductions. Exits 77 (ctest:
// skipped) on a machine without a GPU.
#include <cuda_runtime.h>
#include <genesis/cuda.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

int failures = 0;
#define EXPECT(cond, ...)                              \
  do {                                                 \
    if (!(cond)) {                                     \
      ++failures;                                      \
      std::printf("  FAILED line %d: ", __LINE__);    \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
    }                                                  \
  } while (0)

void ok(cudaError_t e) {
  if (e != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename S> std::vector<S> random_storage(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<S> v(n);
  for (S& x : v) genesis::store(x, normal(rng));
  return v;
}

template <typename T> T* to_device(const std::vector<T>& v) {
  T* d = nullptr;
  ok(cudaMalloc(&d, sizeof(T) * std::max<size_t>(v.size(), 1)));
  ok(cudaMemcpy(d, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice));
  return d;
}

template <typename T> std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> v(n);
  ok(cudaMemcpy(v.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost));
  return v;
}

template <typename T> bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0;
}

// One parameter with its state on host and device.
template <typename P, typename S> struct Case {
  std::vector<P> p, g;
  std::vector<S> s[3];
  std::vector<float> master;
  float step = 0.0f;
};

// Runs `steps` updates of the same tensors (sizes chosen to cross chunk and table boundaries,
// with an unaligned view) through `cpu_step` and `gpu_step` and compares every array.
// float32/float64 math may contract differently on the GPU (FMA), so those compare within a
// tolerance; the bits of stored 16-bit values may differ by that one rounding as well.
template <typename P, typename S, typename CpuStep, typename GpuStep>
void compare(const char* label, int states, bool master, CpuStep cpu_step, GpuStep gpu_step, double rtol) {
  const std::vector<int64_t> sizes = {1, 3, 4097, 65537, 3 * 65536 + 5, 1000};
  std::mt19937 rng(11);
  std::vector<Case<P, S>> cases(sizes.size());
  std::vector<genesis::TensorSlots> cpu(sizes.size()), gpu(sizes.size());
  std::vector<float*> d_steps;
  for (size_t t = 0; t < sizes.size(); ++t) {
    // The last tensor is a view starting one element into its allocation: unaligned.
    const int64_t n = sizes[t], offset = t + 1 == sizes.size() ? 1 : 0;
    Case<P, S>& c = cases[t];
    c.p = random_storage<P>(rng, n + offset, 1.0f);
    c.g = random_storage<P>(rng, n + offset, 1.0f);
    for (int k = 0; k < states; ++k) c.s[k] = std::vector<S>(n + offset, S{});
    if (master) for (const P& x : c.p) c.master.push_back(genesis::load<float>(x));
    if (master) c.master.insert(c.master.end(), offset, 0.0f);
    genesis::TensorSlots& h = cpu[t];
    genesis::TensorSlots& d = gpu[t];
    h.numel = d.numel = n;
    h.param = c.p.data() + offset;
    h.grad = c.g.data() + offset;
    d.param = to_device(c.p) + offset;
    d.grad = to_device(c.g) + offset;
    for (int k = 0; k < states; ++k) {
      h.state[k] = c.s[k].data() + offset;
      d.state[k] = to_device(c.s[k]) + offset;
    }
    if (master) {
      h.master = c.master.data() + offset;
      d.master = to_device(c.master) + offset;
    }
    h.step = &c.step;
    d_steps.push_back(to_device(std::vector<float>{0.0f}));
    d.step = d_steps.back();
    h.id = d.id = t;
    h.fresh = d.fresh = true;
  }
  for (int step = 0; step < 3; ++step) {
    cpu_step(cpu.data(), static_cast<int64_t>(cpu.size()));
    gpu_step(gpu.data(), static_cast<int64_t>(gpu.size()));
    for (auto& h : cpu) h.fresh = false;
    for (auto& d : gpu) d.fresh = false;
  }
  ok(cudaDeviceSynchronize());
  for (size_t t = 0; t < sizes.size(); ++t) {
    const std::vector<P> dp = to_host(static_cast<P*>(gpu[t].param), sizes[t]);
    double worst = 0;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const double a = genesis::load<double>(static_cast<P*>(cpu[t].param)[i]);
      const double b = genesis::load<double>(dp[i]);
      worst = std::max(worst, std::fabs(a - b) / (std::fabs(a) + 1e-6));
    }
    EXPECT(worst <= rtol, "%s tensor %zu (n=%lld): max relative difference %g", label, t, (long long)sizes[t], worst);
    const float dstep = to_host(gpu[t].step, 1)[0];
    EXPECT(dstep == *cpu[t].step, "%s tensor %zu: device step %g, host step %g", label, t, dstep, *cpu[t].step);
  }
}

}  // namespace

int main() {
  if (genesis::cuda::device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  using namespace genesis;
  const double f32 = 2e-6, f16 = 1e-2;
  AdamOptions adam;
  adam.lr = 1e-2;
  adam.weight_decay = 0.1;
  for (bool amsgrad : {false, true}) {
    adam.amsgrad = amsgrad;
    StepConfig c;
    compare<float, float>("adamw f32", amsgrad ? 3 : 2, false,
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); }, f32);
  }
  {
    StepConfig c;
    c.param_dtype = DType::Float64;
    c.state_dtype = DType::Float64;
    compare<double, double>("adam f64", 2, false,
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, false, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, false, c, t, n, nullptr); }, 1e-12);
  }
  {
    StepConfig c;
    c.param_dtype = DType::BFloat16;
    c.master_weights = true;
    compare<BFloat16, float>("adamw bf16 master", 2, true,
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); }, f16);
    c.master_weights = false;
    c.param_dtype = DType::Float16;
    c.state_dtype = DType::BFloat16;
    compare<Half, BFloat16>("adamw f16 bf16-state", 2, false,
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); }, f16);
  }
  for (bool nesterov : {false, true}) {
    const SgdOptions sgd{0.1, 0.9, 0.0, 0.01, nesterov, false};
    StepConfig c;
    compare<float, float>("sgd", 1, false,
        [&](TensorSlots* t, int64_t n) { cpu::sgd_step(sgd, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::sgd_step(sgd, c, t, n, nullptr); }, f32);
  }
  {
    const RmspropOptions rms{0.01, 0.99, 1e-8, 0.0, 0.9, true, false};
    StepConfig c;
    compare<float, float>("rmsprop centered momentum", 3, false,
        [&](TensorSlots* t, int64_t n) { cpu::rmsprop_step(rms, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::rmsprop_step(rms, c, t, n, nullptr); }, f32);
  }
  {
    // A skipped step (found_inf set on the device) changes nothing, step counters included.
    float* found = to_device(std::vector<float>{1.0f});
    StepConfig skip;
    skip.found_inf = found;
    std::vector<float> p = {1, 2, 3}, g = {1, 1, 1}, m(3), v(3);
    TensorSlots d;
    d.param = to_device(p);
    d.grad = to_device(g);
    d.state[0] = to_device(m);
    d.state[1] = to_device(v);
    d.step = to_device(std::vector<float>{4.0f});
    d.numel = 3;
    cuda::adam_step(adam, true, skip, &d, 1, nullptr);
    ok(cudaDeviceSynchronize());
    EXPECT(same_bits(to_host(static_cast<float*>(d.param), 3), p), "skipped step changed the parameter");
    EXPECT(to_host(d.step, 1)[0] == 4.0f, "skipped step advanced the step counter");
  }
  {
    // Global norm: deterministic and equal to the CPU's within double rounding; clip reads it.
    std::mt19937 rng(5);
    std::vector<float> a = random_storage<float>(rng, 200000, 1.0f), b = random_storage<float>(rng, 7, 1.0f);
    std::vector<Buffer> host = {{a.data(), (int64_t)a.size()}, {b.data(), (int64_t)b.size()}};
    std::vector<Buffer> dev = {{to_device(a), (int64_t)a.size()}, {to_device(b), (int64_t)b.size()}};
    double* total = nullptr;
    ok(cudaMalloc(&total, sizeof(double)));
    for (double norm_type : {1.0, 2.0, 3.0, double(INFINITY)}) {
      const double expected = cpu::global_norm(norm_type, DType::Float32, host.data(), 2);
      cuda::global_norm(norm_type, DType::Float32, dev.data(), 2, total, nullptr);
      const double first = to_host(total, 1)[0];
      cuda::global_norm(norm_type, DType::Float32, dev.data(), 2, total, nullptr);
      const double second = to_host(total, 1)[0];
      EXPECT(std::fabs(first - expected) <= 1e-12 * expected, "norm %g: gpu %.17g cpu %.17g", norm_type, first, expected);
      EXPECT(first == second, "norm %g is not deterministic", norm_type);
    }
    cuda::global_norm(2.0, DType::Float32, dev.data(), 2, total, nullptr);
    cuda::clip_by_norm(1.0, total, DType::Float32, dev.data(), 2, nullptr);
    cuda::global_norm(2.0, DType::Float32, dev.data(), 2, total, nullptr);
    EXPECT(std::fabs(to_host(total, 1)[0] - 1.0) < 1e-5, "clipped norm %g", to_host(total, 1)[0]);
    float* found = to_device(std::vector<float>{0.0f});
    cuda::unscale(nullptr, DType::Float32, dev.data(), 2, found, nullptr);
    EXPECT(to_host(found, 1)[0] == 0.0f, "finite gradients reported non-finite");
    ok(cudaMemcpy(static_cast<float*>(dev[1].data) + 3, &std::vector<float>{NAN}[0], sizeof(float), cudaMemcpyHostToDevice));
    cuda::unscale(nullptr, DType::Float32, dev.data(), 2, found, nullptr);
    EXPECT(to_host(found, 1)[0] == 1.0f, "NaN gradient not found");
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
