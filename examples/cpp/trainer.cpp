// A C++ training program on genesis: logistic regression on generated data, gradients by hand,
// AdamW with a cosine learning-rate schedule, gradient clipping, and a checkpoint mid-run from
// which a fresh optimizer resumes. Usage: trainer [checkpoint-path]
#include <genesis/clip.h>
#include <genesis/optim.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

namespace {

constexpr int kFeatures = 8;
constexpr int kSamples = 256;
constexpr int kSteps = 200;
constexpr double kPi = 3.14159265358979323846;

struct Data {
  std::vector<float> x;  // kSamples x kFeatures
  std::vector<float> y;  // 0 or 1
};

// Labels from a fixed hidden linear rule, so a linear model can learn them.
Data make_data() {
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Data d;
  for (int i = 0; i < kSamples; ++i) {
    float score = 0.0f;
    for (int j = 0; j < kFeatures; ++j) {
      const float v = normal(rng);
      d.x.push_back(v);
      score += v * (j % 2 ? 1.0f : -0.5f);
    }
    d.y.push_back(score > 0 ? 1.0f : 0.0f);
  }
  return d;
}

// Binary cross-entropy of sigmoid(x.w + b); writes its gradient into gw, gb.
float loss_and_grad(const Data& d, const std::vector<float>& w, float b, std::vector<float>& gw, float& gb) {
  float loss = 0.0f;
  std::fill(gw.begin(), gw.end(), 0.0f);
  gb = 0.0f;
  for (int i = 0; i < kSamples; ++i) {
    float z = b;
    for (int j = 0; j < kFeatures; ++j) z += d.x[i * kFeatures + j] * w[j];
    const float p = 1.0f / (1.0f + std::exp(-z));
    loss -= d.y[i] * std::log(p + 1e-7f) + (1 - d.y[i]) * std::log(1 - p + 1e-7f);
    const float dz = (p - d.y[i]) / kSamples;
    for (int j = 0; j < kFeatures; ++j) gw[j] += dz * d.x[i * kFeatures + j];
    gb += dz;
  }
  return loss / kSamples;
}

// CosineAnnealingLR's closed form: eta_min + (base - eta_min) * (1 + cos(pi * t / T)) / 2.
double cosine_lr(double base, double eta_min, int t, int t_max) {
  return eta_min + (base - eta_min) * (1.0 + std::cos(kPi * t / t_max)) / 2.0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* checkpoint = argc > 1 ? argv[1] : "trainer_state.gckpt";
  const Data data = make_data();
  std::vector<float> w(kFeatures, 0.0f), gw(kFeatures);
  float b = 0.0f, gb = 0.0f;
  const std::vector<genesis::ParamView> params = {{w.data(), gw.data(), kFeatures, genesis::DType::Float32},
                                                  {&b, &gb, 1, genesis::DType::Float32}};

  genesis::AdamOptions options = genesis::adamw_defaults();
  options.lr = 0.1;
  const double base_lr = options.lr;
  auto opt = std::make_unique<genesis::AdamW>(params, options);

  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < kSteps; ++step) {
    last = loss_and_grad(data, w, b, gw, gb);
    if (step == 0) first = last;
    genesis::clip_grad_norm(params, 1.0);
    opt->step();
    opt->param_groups()[0].options.lr = cosine_lr(base_lr, 1e-4, step + 1, kSteps);
    if (step == kSteps / 2) {
      // Save the optimizer mid-run and continue with a fresh one restored from the file.
      opt->save(checkpoint);
      opt = std::make_unique<genesis::AdamW>(params, options);
      opt->load(checkpoint);
      std::printf("step %3d  resumed from %s (lr %.5f)\n", step, checkpoint, opt->param_groups()[0].options.lr);
    }
    if (step % 25 == 0) std::printf("step %3d  loss %.4f\n", step, last);
  }
  std::printf("final loss %.4f\n", last);
  if (!(last < first * 0.5f)) {
    std::printf("loss did not decrease enough: %.4f -> %.4f\n", first, last);
    return 1;
  }
  std::printf("loss decreased from %.4f to %.4f\n", first, last);
  return 0;
}
