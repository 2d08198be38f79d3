// The CUDA kernels against the CPU core on the same inputs, bit for bit: every rule, 16-bit
// storage, master weights, stochastic rounding, empty and unaligned tensors, lists that span
// several tables, the skipped step (SGD's first step included), and the clip reductions. Both
// sides are compiled without floating-point contraction, so every parameter, state array,
// master copy and step counter must be identical. Exits 77 (ctest: skipped) without a GPU.
#include <cuda_runtime.h>
#include <genesis/cuda.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int failures = 0;
#define EXPECT(cond, ...)                          \
  do {                                             \
    if (!(cond)) {                                 \
      ++failures;                                  \
      std::printf("  FAILED line %d: ", __LINE__); \
      std::printf(__VA_ARGS__);                    \
      std::printf("\n");                           \
    }                                              \
  } while (0)

void ok(cudaError_t e) {
  if (e != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename S>
std::vector<S> random_storage(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<S> v(n);
  for (S& x : v) genesis::store(x, normal(rng));
  return v;
}

std::vector<void*> allocations;

template <typename T>
T* to_device(const std::vector<T>& v) {
  T* d = nullptr;
  ok(cudaMalloc(&d, sizeof(T) * std::max<size_t>(v.size(), 1)));
  allocations.push_back(d);
  if (!v.empty()) ok(cudaMemcpy(d, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> v(n);
  if (n) ok(cudaMemcpy(v.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost));
  return v;
}

void free_all() {
  ok(cudaDeviceSynchronize());
  for (void* p : allocations) ok(cudaFree(p));
  allocations.clear();
}

// The index of the first element whose bits differ, or -1.
template <typename T>
int64_t first_difference(const T* a, const T* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(T)) != 0) return i;
  return -1;
}

// One parameter's host arrays; the device copies hang off the GPU TensorSlots.
template <typename P, typename S>
struct Case {
  std::vector<P> p, g;
  std::vector<S> s[3];
  std::vector<float> master;
  float step = 0.0f;
};

using Step = std::function<void(genesis::TensorSlots*, int64_t)>;

struct Setup {
  int states = 0;
  bool master = false;
  bool device_counter = true;  // the GPU tensors carry a device step counter
  int steps = 3;
};

// Sizes that cross chunk boundaries, an empty tensor, an unaligned view (the last), and with
// `many` enough small tensors to span several tables.
std::vector<int64_t> sizes_for(bool many) {
  std::vector<int64_t> sizes = {1, 3, 0, 4097, 65537, 3 * 65536 + 5};
  if (many)
    for (int i = 0; i < 300; ++i) sizes.push_back(1 + (i * 37) % 700);
  sizes.push_back(1000);
  return sizes;
}

// Runs `steps` updates of the same tensors through `cpu_step` and `gpu_step` and compares the
// bits of every array and step counter.
template <typename P, typename S>
void compare(const char* label, const Setup& setup, const Step& cpu_step, const Step& gpu_step, bool many = false) {
  std::printf("%s\n", label);  // progress: stdout is unbuffered (main), so a crash names its case
  const std::vector<int64_t> sizes = sizes_for(many);
  std::mt19937 rng(11);
  std::vector<Case<P, S>> cases(sizes.size());
  std::vector<genesis::TensorSlots> cpu(sizes.size()), gpu(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) {
    // The last tensor is a view starting one element into its allocation: unaligned.
    const int64_t n = sizes[t], offset = t + 1 == sizes.size() ? 1 : 0;
    Case<P, S>& c = cases[t];
    c.p = random_storage<P>(rng, n + offset, 1.0f);
    c.g = random_storage<P>(rng, n + offset, 1.0f);
    for (int k = 0; k < setup.states; ++k) c.s[k] = std::vector<S>(n + offset, S{});
    if (setup.master) {
      for (const P& x : c.p) c.master.push_back(genesis::load<float>(x));
    }
    genesis::TensorSlots& h = cpu[t];
    genesis::TensorSlots& d = gpu[t];
    h.numel = d.numel = n;
    h.param = c.p.data() + offset;
    h.grad = c.g.data() + offset;
    d.param = to_device(c.p) + offset;
    d.grad = to_device(c.g) + offset;
    for (int k = 0; k < setup.states; ++k) {
      h.state[k] = c.s[k].data() + offset;
      d.state[k] = to_device(c.s[k]) + offset;
    }
    if (setup.master) {
      h.master = c.master.data() + offset;
      d.master = to_device(c.master) + offset;
    }
    h.step = &c.step;
    if (setup.device_counter) d.step = to_device(std::vector<float>{0.0f});
    h.id = d.id = t;
    h.fresh = d.fresh = true;
  }
  for (int step = 0; step < setup.steps; ++step) {
    cpu_step(cpu.data(), static_cast<int64_t>(cpu.size()));
    gpu_step(gpu.data(), static_cast<int64_t>(gpu.size()));
    for (auto& h : cpu) h.fresh = false;
    for (auto& d : gpu) d.fresh = false;
  }
  ok(cudaDeviceSynchronize());
  int reported = 0;
  auto report = [&](const char* what, size_t t, int64_t at) {
    if (at < 0 || reported > 5) return;
    ++reported;
    EXPECT(false, "%s tensor %zu (n=%lld): %s differs first at element %lld", label, t, (long long)sizes[t], what,
           (long long)at);
  };
  for (size_t t = 0; t < sizes.size(); ++t) {
    const int64_t n = sizes[t];
    report("parameter", t,
           first_difference(static_cast<P*>(cpu[t].param), to_host(static_cast<P*>(gpu[t].param), n).data(), n));
    for (int k = 0; k < setup.states; ++k) {
      const std::string name = "state " + std::to_string(k);
      report(
          name.c_str(), t,
          first_difference(static_cast<S*>(cpu[t].state[k]), to_host(static_cast<S*>(gpu[t].state[k]), n).data(), n));
    }
    if (setup.master) report("master", t, first_difference(cpu[t].master, to_host(gpu[t].master, n).data(), n));
    if (setup.device_counter) {
      const float dstep = to_host(gpu[t].step, 1)[0];
      // SGD's device counter counts applied steps, which the CPU does not track.
      const float expected = *cpu[t].step != 0.0f ? *cpu[t].step : float(setup.steps);
      EXPECT(dstep == expected, "%s tensor %zu (n=%lld): device step %g, expected %g", label, t, (long long)sizes[t],
             dstep, expected);
    }
  }
  free_all();
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  if (genesis::cuda::device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  using namespace genesis;
  const AdamOptions adam_base{1e-2, 0.9, 0.999, 1e-8, 0.1, false, false};
  {
    // The deferred clip's gradient transform (NOTE: [gradient transform]): 1/scale, then the
    // clip coefficient read from device memory, then the clamp, as the CPU applies them.
    AdamOptions adam = adam_base;
    const float inv_scale = 0.25f;
    const double coef = 0.3;
    StepConfig host, device;
    host.grad_scale = &inv_scale;
    host.clip_coef = &coef;
    host.clip_value = device.clip_value = 0.1;
    device.grad_scale = to_device(std::vector<float>{inv_scale});
    device.clip_coef = to_device(std::vector<double>{coef});
    compare<float, float>(
        "adamw f32, scale x clip coefficient + clamp", Setup{2},
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, host, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, device, t, n, nullptr); });
  }
  {
    // capturable=True's device lr (StepConfig::lr, docs/semantics.md#capturable-steps): the
    // kernels read it in place of Options::lr, widened as the host widens a float32 lr. The GPU
    // options carry lr 0, so only the device value can give the CPU's bits.
    AdamOptions cpu_adam = adam_base, gpu_adam = adam_base;
    const float lr32 = 3e-3f;
    cpu_adam.lr = double(lr32);
    gpu_adam.lr = 0.0;
    StepConfig host, device;
    device.lr = to_device(std::vector<float>{lr32});
    compare<float, float>(
        "adamw f32, lr on the device", Setup{2},
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(cpu_adam, true, host, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(gpu_adam, true, device, t, n, nullptr); });
    device.lr = to_device(std::vector<double>{0.125});
    device.lr_is_double = true;
    cpu_adam.lr = 0.125;
    compare<float, float>(
        "adamw f32, float64 lr on the device", Setup{2},
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(cpu_adam, true, host, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(gpu_adam, true, device, t, n, nullptr); });
    // A reduction rule takes its options from the host: a device lr is refused, not ignored.
    bool refused = false;
    try {
      cuda::step(LambOptions{}, device, nullptr, 1, nullptr);
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    EXPECT(refused, "LAMB accepted a device lr");
    free_all();
  }
  for (bool amsgrad : {false, true}) {
    AdamOptions adam = adam_base;  // each case its own options
    adam.amsgrad = amsgrad;
    StepConfig c;
    Setup s{amsgrad ? 3 : 2};
    compare<float, float>(
        amsgrad ? "adamw f32 amsgrad" : "adamw f32", s,
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); }, /*many=*/!amsgrad);
  }
  {
    // float64 math: the bias corrections come from genesis::portable_pow (rules/pow.h), the
    // same bits on both backends (CUDA's and the C library's pow() round independently).
    AdamOptions adam = adam_base;
    adam.beta1 = 0.8;
    adam.beta2 = 0.95;
    StepConfig c;
    c.param_dtype = DType::Float64;
    c.state_dtype = DType::Float64;
    compare<double, double>(
        "adam f64", Setup{2}, [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, false, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, false, c, t, n, nullptr); });
  }
  {
    const AdamOptions adam = adam_base;
    StepConfig c;
    c.param_dtype = DType::BFloat16;
    c.master_weights = true;
    compare<BFloat16, float>(
        "adamw bf16 master", Setup{2, true}, [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); });
    c.master_weights = false;
    c.stochastic_rounding = true;
    c.seed = 7;
    // float32 state (the config's state_dtype): bfloat16 arrays here were half the bytes the
    // kernels write, which corrupted the heap (found on the first GPU run, under valgrind).
    compare<BFloat16, float>(
        "adamw bf16 stochastic", Setup{2}, [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); });
    c.stochastic_rounding = false;
    c.param_dtype = DType::Float16;
    c.state_dtype = DType::BFloat16;
    compare<Half, BFloat16>(
        "adamw f16 bf16-state", Setup{2}, [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, c, t, n, nullptr); });
  }
  for (bool nesterov : {false, true}) {
    for (bool device_counter : {true, false}) {
      const SgdOptions sgd{0.1, 0.9, 0.25, 0.01, nesterov, false};
      StepConfig c;
      Setup s{1};
      s.device_counter = device_counter;  // SGD's first step decided on the device, or by the host flag
      compare<float, float>(
          nesterov ? "sgd nesterov" : "sgd", s, [&](TensorSlots* t, int64_t n) { cpu::sgd_step(sgd, c, t, n); },
          [&](TensorSlots* t, int64_t n) { cuda::sgd_step(sgd, c, t, n, nullptr); });
    }
  }
  {
    const SgdOptions plain{0.1, 0.0, 0.0, 0.0, false, true};
    StepConfig c;
    Setup s{0};
    s.device_counter = false;
    compare<float, float>(
        "sgd plain maximize", s, [&](TensorSlots* t, int64_t n) { cpu::sgd_step(plain, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::sgd_step(plain, c, t, n, nullptr); });
  }
  {
    const RmspropOptions rms{0.01, 0.99, 1e-8, 0.0, 0.9, true, false};
    StepConfig c;
    compare<float, float>(
        "rmsprop centered momentum", Setup{3}, [&](TensorSlots* t, int64_t n) { cpu::rmsprop_step(rms, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::rmsprop_step(rms, c, t, n, nullptr); });
  }
  {
    // The reduction rules (1-D tensors: LAMB, Adafactor's unfactored path): the sums run in the
    // same order on both backends (NOTE: [reduction rules]), over several chunks and tables.
    LambOptions lamb;
    lamb.weight_decay = 0.1;
    StepConfig c;
    compare<float, float>(
        "lamb", Setup{2}, [&](TensorSlots* t, int64_t n) { cpu::step(lamb, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::step(lamb, c, t, n, nullptr); }, /*many=*/true);
    AdafactorOptions adafactor;
    adafactor.weight_decay = 0.1;
    compare<float, float>(
        "adafactor vectors", Setup{1}, [&](TensorSlots* t, int64_t n) { cpu::step(adafactor, c, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::step(adafactor, c, t, n, nullptr); }, /*many=*/true);
    compare<BFloat16, float>(
        "lamb bfloat16 master", Setup{2, true},
        [&](TensorSlots* t, int64_t n) {
          StepConfig m;
          m.param_dtype = DType::BFloat16;
          m.master_weights = true;
          cpu::step(lamb, m, t, n);
        },
        [&](TensorSlots* t, int64_t n) {
          StepConfig m;
          m.param_dtype = DType::BFloat16;
          m.master_weights = true;
          cuda::step(lamb, m, t, n, nullptr);
        });
  }
  {
    // Device-side GradScaler inputs: 1/scale read by the kernels, found_inf clear.
    const AdamOptions adam = adam_base;
    StepConfig cpu_config, gpu_config;
    const float inv = 0.25f;
    cpu_config.grad_scale = &inv;
    gpu_config.grad_scale = to_device(std::vector<float>{inv});
    gpu_config.found_inf = to_device(std::vector<float>{0.0f});
    compare<float, float>(
        "adamw device grad scale", Setup{2},
        [&](TensorSlots* t, int64_t n) { cpu::adam_step(adam, true, cpu_config, t, n); },
        [&](TensorSlots* t, int64_t n) { cuda::adam_step(adam, true, gpu_config, t, n, nullptr); });
  }
  {
    // A skipped step (found_inf set on the device) changes nothing, step counters included.
    const AdamOptions adam = adam_base;
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
    EXPECT(to_host(static_cast<float*>(d.param), 3) == p, "skipped step changed the parameter");
    EXPECT(to_host(d.step, 1)[0] == 4.0f, "skipped step advanced the step counter");
    free_all();
  }
  {
    // SGD: a first step skipped on the device leaves the next one first (b = g, not
    // (1 - dampening) * g), although the host cleared its flag after the skipped call.
    const SgdOptions sgd{0.1, 0.9, 0.5, 0.0, false, false};
    std::vector<float> p = {1, 2, 3}, g = {1, -2, 4}, b(3);
    float cpu_step_unused = 0.0f;
    TensorSlots h;
    h.param = p.data();
    h.grad = g.data();
    h.state[0] = b.data();
    h.numel = 3;
    h.step = &cpu_step_unused;
    h.fresh = true;
    TensorSlots d = h;
    d.param = to_device(p);
    d.grad = to_device(g);
    d.state[0] = to_device(b);
    d.step = to_device(std::vector<float>{0.0f});
    StepConfig skip, run;
    skip.found_inf = to_device(std::vector<float>{1.0f});
    run.found_inf = to_device(std::vector<float>{0.0f});
    cuda::sgd_step(sgd, skip, &d, 1, nullptr);
    d.fresh = false;
    cuda::sgd_step(sgd, run, &d, 1, nullptr);
    cpu::sgd_step(sgd, StepConfig{}, &h, 1);
    ok(cudaDeviceSynchronize());
    EXPECT(to_host(static_cast<float*>(d.param), 3) == p, "SGD after a skipped first step: parameter differs");
    EXPECT(to_host(static_cast<float*>(d.state[0]), 3) == b, "SGD after a skipped first step: buffer differs");
    EXPECT(to_host(d.step, 1)[0] == 1.0f, "SGD's device counter counts the applied step only");
    free_all();
  }
  {
    // Global norm: deterministic and the CPU's bits (NOTE: [norm order]); clip reads it.
    std::mt19937 rng(5);
    std::vector<float> a = random_storage<float>(rng, 200003, 1.0f), b = random_storage<float>(rng, 7, 1.0f);
    std::vector<Buffer> host = {{a.data(), (int64_t)a.size()}, {b.data(), (int64_t)b.size()}};
    // The first ends in a partial pack (its last 3 elements one at a time); the second buffer
    // is unaligned: the element-wise path.
    float* b_dev = to_device(std::vector<float>(b.size() + 1));
    ok(cudaMemcpy(b_dev + 1, b.data(), sizeof(float) * b.size(), cudaMemcpyHostToDevice));
    std::vector<Buffer> dev = {{to_device(a), (int64_t)a.size()}, {b_dev + 1, (int64_t)b.size()}};
    double* total = to_device(std::vector<double>{0.0});
    double* workspace = to_device(std::vector<double>(cuda::norm_workspace_size(dev.data(), 2)));
    for (double norm_type : {1.0, 2.0, 3.0, double(INFINITY)}) {
      const double expected = cpu::global_norm(norm_type, DType::Float32, host.data(), 2);
      cuda::global_norm(norm_type, DType::Float32, dev.data(), 2, total, workspace, nullptr);
      const double first = to_host(total, 1)[0];
      cuda::global_norm(norm_type, DType::Float32, dev.data(), 2, total, workspace, nullptr);
      const double second = to_host(total, 1)[0];
      EXPECT(std::memcmp(&first, &expected, sizeof(double)) == 0, "norm %g: gpu %.17g cpu %.17g", norm_type, first,
             expected);
      EXPECT(std::memcmp(&first, &second, sizeof(double)) == 0, "norm %g is not deterministic", norm_type);
    }
    // Clip: the same coefficient as the CPU's on the same norm, so the same bits.
    cuda::global_norm(2.0, DType::Float32, dev.data(), 2, total, workspace, nullptr);
    const double norm = to_host(total, 1)[0];
    cuda::clip_by_norm(1.0, total, DType::Float32, dev.data(), 2, nullptr);
    cpu::unscale(1.0 / (norm + 1e-6), DType::Float32, host.data(), 2);
    EXPECT(
        first_difference(a.data(), to_host(static_cast<float*>(dev[0].data), a.size()).data(), (int64_t)a.size()) < 0,
        "clipped gradients differ from the CPU's");
    EXPECT(first_difference(b.data(), to_host(b_dev + 1, b.size()).data(), (int64_t)b.size()) < 0,
           "clipped unaligned gradients differ from the CPU's");
    cuda::global_norm(2.0, DType::Float32, dev.data(), 2, total, workspace, nullptr);
    EXPECT(std::fabs(to_host(total, 1)[0] - 1.0) < 1e-5, "clipped norm %g", to_host(total, 1)[0]);
    cuda::clamp(0.001, DType::Float32, dev.data(), 2, nullptr);
    cpu::clamp(0.001, DType::Float32, host.data(), 2);
    EXPECT(
        first_difference(a.data(), to_host(static_cast<float*>(dev[0].data), a.size()).data(), (int64_t)a.size()) < 0,
        "clamped gradients differ from the CPU's");
    float* found = to_device(std::vector<float>{0.0f});
    cuda::unscale(nullptr, DType::Float32, dev.data(), 2, found, nullptr);
    EXPECT(to_host(found, 1)[0] == 0.0f, "finite gradients reported non-finite");
    const float nan = NAN;
    ok(cudaMemcpy(b_dev + 1 + 3, &nan, sizeof(float), cudaMemcpyHostToDevice));
    cuda::unscale(nullptr, DType::Float32, dev.data(), 2, found, nullptr);
    EXPECT(to_host(found, 1)[0] == 1.0f, "NaN gradient not found");
    free_all();
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
