// Every rule of include/genesis/rules/list.h through the C++ API: a run interrupted by a
// state_dict save and load continues bit for bit, and per-tensor scalars are saved as torch
// keeps them (0-dim float32).
#include <genesis/optim.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"

using namespace genesis;

namespace {

// Two parameters of sizes 3 and 1000 with fixed gradients per step.
struct Run {
  std::vector<float> a, b, ga, gb;
  explicit Run(unsigned seed) : a(3), b(1000), ga(3), gb(1000) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& x : a) x = u(rng);
    for (float& x : b) x = u(rng);
  }
  std::vector<ParamView> params() {
    // b is a 40 x 25 matrix: Adafactor factors it (the element-wise rules see 1000 elements).
    return {{a.data(), ga.data(), 3, DType::Float32},
            {b.data(), gb.data(), 1000, DType::Float32, Device::CPU, {40, 25}}};
  }
  void grads(int step) {
    std::mt19937 rng(100 + step);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (float& x : ga) x = n(rng);
    for (float& x : gb) x = n(rng);
  }
};

template <typename Optimizer, typename Options>
void check_resume(Options o) {
  Run whole(1), first(1), second(1);
  Optimizer straight(whole.params(), o);
  Optimizer before(first.params(), o);
  for (int step = 0; step < 5; ++step) {
    whole.grads(step);
    first.grads(step);
    straight.step();
    before.step();
  }
  const checkpoint::Document doc = before.state_dict();
  second.a = first.a;
  second.b = first.b;
  Options other = o;
  other.lr = o.lr * 3.0 + 1.0;  // loaded from the state_dict
  Optimizer after(second.params(), other);
  after.load_state_dict(doc);
  CHECK(after.param_groups()[0].options.lr == o.lr);
  for (int step = 5; step < 10; ++step) {
    whole.grads(step);
    second.grads(step);
    straight.step();
    after.step();
  }
  CHECK(std::memcmp(whole.a.data(), second.a.data(), 3 * sizeof(float)) == 0);
  CHECK(std::memcmp(whole.b.data(), second.b.data(), 1000 * sizeof(float)) == 0);
  for (const auto& scalar : scalar_state(o)) {
    const checkpoint::Value* entry = doc.root.find(std::string("state"))->find(int64_t(0));
    const checkpoint::Value* value = entry->find(scalar.first);
    CHECK(value && value->kind == checkpoint::Value::Kind::Array);
    const checkpoint::Array& array = doc.arrays.at(value->array);
    CHECK(array.dtype == DType::Float32 && array.shape.empty());
  }
}

}  // namespace

TEST(every_rule_resumes_from_its_state_dict_bit_for_bit){
#define GENESIS_CHECK_RESUME(rule, Options, Class) \
  {                                                \
    Options o;                                     \
    if (o.lr == 0.0) o.lr = 0.01;                  \
    check_resume<Class>(o);                        \
  }
    GENESIS_RULES(GENESIS_CHECK_RESUME)
#undef GENESIS_CHECK_RESUME
}

TEST(nadam_mu_product_follows_the_schedule) {
  Run run(2);
  NadamOptions o;
  NAdam opt(run.params(), o);
  double product = 1.0;
  for (int step = 1; step <= 3; ++step) {
    run.grads(step);
    opt.step();
    product = static_cast<float>(product) *
              static_cast<float>(o.beta1 * (1.0 - 0.5 * std::pow(0.96, step * o.momentum_decay)));
  }
  const checkpoint::Document doc = opt.state_dict();
  const checkpoint::Value* value =
      doc.root.find(std::string("state"))->find(int64_t(1))->find(std::string("mu_product"));
  float saved;
  std::memcpy(&saved, doc.arrays.at(value->array).bytes.data(), sizeof(float));
  CHECK(saved == static_cast<float>(product));
}

TEST(adamw_decays_decoupled_whatever_its_options_say) {
  Run x(3), y(3);
  AdamOptions plain;  // decoupled_weight_decay = false
  plain.weight_decay = 0.1;
  AdamOptions decoupled = plain;
  decoupled.decoupled_weight_decay = true;
  AdamW adamw(x.params(), plain);
  Adam adam(y.params(), decoupled);
  for (int step = 0; step < 3; ++step) {
    x.grads(step);
    y.grads(step);
    adamw.step();
    adam.step();
  }
  CHECK(std::memcmp(x.b.data(), y.b.data(), 1000 * sizeof(float)) == 0);
}

TEST(lamb_first_step_is_the_formula) {
  Run run(4);
  LambOptions o;
  o.lr = 0.1;
  LAMB opt(run.params(), o);
  const std::vector<float> before = run.a;
  run.grads(0);
  opt.step();
  // Step 1: m_hat = g, v_hat = g^2, u = g / (|g| + eps) + wd p; p -= lr ||p|| / ||u|| u.
  double pp = 0.0, uu = 0.0;
  std::vector<double> u(3);
  for (int i = 0; i < 3; ++i) {
    const double g = run.ga[i];
    u[i] = g / (std::fabs(g) + o.eps) + o.weight_decay * before[i];
    pp += double(before[i]) * before[i];
    uu += u[i] * u[i];
  }
  for (int i = 0; i < 3; ++i) {
    const double want = before[i] - o.lr * std::sqrt(pp) / std::sqrt(uu) * u[i];
    CHECK(std::fabs(run.a[i] - want) < 1e-6);
  }
}

TEST(a_shape_that_does_not_match_numel_is_refused) {
  std::vector<float> w(6), g(6);
  bool threw = false;
  try {
    Adafactor opt({{w.data(), g.data(), 6, DType::Float32, Device::CPU, {4, 2}}}, AdafactorOptions{});
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("shape of 8 elements but numel 6") != std::string::npos;
  }
  CHECK(threw);
}

TEST(adafactor_keeps_torchs_factored_state) {
  Run run(5);
  AdafactorOptions o;
  Adafactor opt(run.params(), o);
  run.grads(0);
  opt.step();
  const checkpoint::Document doc = opt.state_dict();
  const checkpoint::Value* vector = doc.root.find(std::string("state"))->find(int64_t(0));
  const checkpoint::Value* matrix = doc.root.find(std::string("state"))->find(int64_t(1));
  CHECK(vector->find(std::string("variance")) && !vector->find(std::string("row_var")));
  const checkpoint::Array& row = doc.arrays.at(matrix->find(std::string("row_var"))->array);
  const checkpoint::Array& col = doc.arrays.at(matrix->find(std::string("col_var"))->array);
  CHECK((row.shape == std::vector<int64_t>{40, 1}) && (col.shape == std::vector<int64_t>{1, 25}));
  // eps = (None, 1e-3) survives the state_dict as torch writes it.
  const checkpoint::Value* eps = doc.root.find(std::string("param_groups"))->items[0].find(std::string("eps"));
  CHECK(eps->items[0].kind == checkpoint::Value::Kind::None && eps->items[1].number == 1e-3);
  // Every row_var entry is the mean of its row's squared gradients (w = 1 at step 1).
  const float* r = reinterpret_cast<const float*>(row.bytes.data());
  for (int i = 0; i < 40; ++i) {
    double sum = 0.0;
    for (int j = 0; j < 25; ++j) sum += double(run.gb[i * 25 + j]) * run.gb[i * 25 + j];
    CHECK(std::fabs(r[i] - sum / 25.0) < 1e-5 * (1.0 + sum / 25.0));
  }
}
