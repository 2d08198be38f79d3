// The C++ API against a float64 reference written straight from the formulas
// (docs/semantics.md#update-rules), plus resume, options and clipping behaviour.
#include <genesis/clip.h>
#include <genesis/optim.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>

#include "check.h"

using namespace genesis;

namespace {

constexpr int kSteps = 25;
constexpr int kSizes[] = {1, 3, 1000};

std::vector<double> random_vector(std::mt19937& rng, int n) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = normal(rng);
  return v;
}

// Reference Adam/AdamW for one tensor over all steps; grads[t] is the gradient of step t+1.
std::vector<double> reference_adam(std::vector<double> p, const std::vector<std::vector<double>>& grads,
                                   const AdamOptions& o, bool decoupled) {
  std::vector<double> m(p.size(), 0), v(p.size(), 0), vmax(p.size(), 0);
  for (size_t t = 1; t <= grads.size(); ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = o.maximize ? -grads[t - 1][i] : grads[t - 1][i];
      if (decoupled)
        p[i] *= 1 - o.lr * o.weight_decay;
      else
        g += o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      double vhat = v[i];
      if (o.amsgrad) vhat = vmax[i] = std::max(vmax[i], v[i]);
      const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
      p[i] -= (o.lr / bc1) * m[i] / (std::sqrt(vhat) / std::sqrt(bc2) + o.eps);
    }
  }
  return p;
}

std::vector<double> reference_sgd(std::vector<double> p, const std::vector<std::vector<double>>& grads,
                                  const SgdOptions& o) {
  std::vector<double> buf(p.size(), 0);
  for (size_t t = 0; t < grads.size(); ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = o.maximize ? -grads[t][i] : grads[t][i];
      g += o.weight_decay * p[i];
      if (o.momentum != 0) {
        buf[i] = t == 0 ? g : o.momentum * buf[i] + (1 - o.dampening) * g;
        g = o.nesterov ? g + o.momentum * buf[i] : buf[i];
      }
      p[i] -= o.lr * g;
    }
  }
  return p;
}

std::vector<double> reference_rmsprop(std::vector<double> p, const std::vector<std::vector<double>>& grads,
                                      const RmspropOptions& o) {
  std::vector<double> v(p.size(), 0), ga(p.size(), 0), buf(p.size(), 0);
  for (const auto& grad : grads) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = o.maximize ? -grad[i] : grad[i];
      g += o.weight_decay * p[i];
      v[i] = o.alpha * v[i] + (1 - o.alpha) * g * g;
      double avg;
      if (o.centered) {
        ga[i] = o.alpha * ga[i] + (1 - o.alpha) * g;
        avg = std::sqrt(v[i] - ga[i] * ga[i]) + o.eps;
      } else {
        avg = std::sqrt(v[i]) + o.eps;
      }
      if (o.momentum > 0) {
        buf[i] = o.momentum * buf[i] + g / avg;
        p[i] -= o.lr * buf[i];
      } else {
        p[i] -= o.lr * g / avg;
      }
    }
  }
  return p;
}

// Runs `make(params)`'s optimizer for kSteps on every size in float64 and float32 and
// compares with `reference`.
template <typename Make, typename Reference>
void check_against_reference(const char* label, Make make, Reference reference) {
  std::mt19937 rng(42);
  for (int n : kSizes) {
    const std::vector<double> p0 = random_vector(rng, n);
    std::vector<std::vector<double>> grads;
    for (int t = 0; t < kSteps; ++t) grads.push_back(random_vector(rng, n));
    const std::vector<double> expected = reference(p0, grads);

    std::vector<double> p = p0, g(n);
    auto opt64 = make(std::vector<ParamView>{{p.data(), g.data(), n, DType::Float64}});
    std::vector<float> pf(p0.begin(), p0.end()), gf(n);
    auto opt32 = make(std::vector<ParamView>{{pf.data(), gf.data(), n, DType::Float32}});
    for (int t = 0; t < kSteps; ++t) {
      g = grads[t];
      std::copy(grads[t].begin(), grads[t].end(), gf.begin());
      opt64->step();
      opt32->step();
    }
    for (int i = 0; i < n; ++i) {
      if (!check::close(p[i], expected[i], 1e-12, 1e-14) || !check::close(pf[i], expected[i], 1e-4, 1e-5)) {
        std::printf("  %s n=%d i=%d: float64 %.17g float32 %.9g reference %.17g\n", label, n, i, p[i], pf[i],
                    expected[i]);
        CHECK(false);
        return;
      }
    }
  }
}

}  // namespace

TEST(adam_and_adamw_match_reference) {
  for (bool decoupled : {false, true})
    for (bool amsgrad : {false, true})
      for (bool maximize : {false, true}) {
        AdamOptions o;
        o.lr = 0.01;
        o.weight_decay = 0.1;
        o.amsgrad = amsgrad;
        o.maximize = maximize;
        o.decoupled_weight_decay = decoupled;
        check_against_reference(
            "adam", [&](std::vector<ParamView> ps) { return std::make_unique<Adam>(ps, o); },
            [&](auto p, auto& g) { return reference_adam(p, g, o, decoupled); });
      }
}

TEST(sgd_matches_reference) {
  const SgdOptions variants[] = {{0.1, 0, 0, 0, false, false},
                                 {0.1, 0.9, 0, 0.01, false, false},
                                 {0.1, 0.9, 0.2, 0, false, true},
                                 {0.1, 0.9, 0, 0.01, true, false}};
  for (const SgdOptions& o : variants)
    check_against_reference(
        "sgd", [&](std::vector<ParamView> ps) { return std::make_unique<SGD>(ps, o); },
        [&](auto p, auto& g) { return reference_sgd(p, g, o); });
}

TEST(rmsprop_matches_reference) {
  for (bool centered : {false, true})
    for (double momentum : {0.0, 0.9}) {
      const RmspropOptions o{0.01, 0.99, 1e-8, 0.05, momentum, centered, false};
      check_against_reference(
          "rmsprop", [&](std::vector<ParamView> ps) { return std::make_unique<RMSprop>(ps, o); },
          [&](auto p, auto& g) { return reference_rmsprop(p, g, o); });
    }
}

TEST(state_save_and_restore_resumes_exactly) {
  std::mt19937 rng(7);
  const int n = 37;
  const std::vector<double> p0 = random_vector(rng, n);
  std::vector<std::vector<double>> grads;
  for (int t = 0; t < 20; ++t) grads.push_back(random_vector(rng, n));
  AdamOptions o;
  o.amsgrad = true;

  std::vector<float> a(p0.begin(), p0.end()), ga(n), b(p0.begin(), p0.end()), gb(n);
  AdamW straight({{a.data(), ga.data(), n, DType::Float32}}, o);
  auto resumed = std::make_unique<AdamW>(std::vector<ParamView>{{b.data(), gb.data(), n, DType::Float32}}, o);
  for (int t = 0; t < 20; ++t) {
    std::copy(grads[t].begin(), grads[t].end(), ga.begin());
    std::copy(grads[t].begin(), grads[t].end(), gb.begin());
    straight.step();
    resumed->step();
    if (t == 9) {
      resumed->save("resume_state.gckpt");
      resumed =
          std::make_unique<AdamW>(std::vector<ParamView>{{b.data(), gb.data(), n, DType::Float32}}, adamw_defaults());
      resumed->load("resume_state.gckpt");
      CHECK(resumed->param_groups()[0].options.amsgrad);
    }
  }
  CHECK(a == b);  // bit for bit
}

TEST(state_loads_into_float64_parameters_cast) {
  std::vector<float> p32 = {1, 2, 3}, g32 = {0.1f, -0.2f, 0.3f};
  SGD src({{p32.data(), g32.data(), 3, DType::Float32}}, SgdOptions{0.1, 0.9, 0, 0, false, false});
  src.step();
  std::vector<double> p64 = {1, 2, 3}, g64 = {0.1, -0.2, 0.3};
  SGD dst({{p64.data(), g64.data(), 3, DType::Float64}}, SgdOptions{0.5, 0.5, 0, 0, false, false});
  dst.load_state_dict(src.state_dict());
  CHECK(dst.param_groups()[0].options.lr == 0.1);
  const checkpoint::Document doc = dst.state_dict();
  CHECK(doc.arrays.size() == 1 && doc.arrays[0].dtype == DType::Float64);
  CHECK(check::close(reinterpret_cast<const double*>(doc.arrays[0].bytes.data())[1], -0.2f, 0, 1e-12));
}

TEST(failed_load_leaves_optimizer_unchanged) {
  std::vector<float> p = {1, 2}, g = {1, 1}, q = {1, 2, 3}, gq = {1, 1, 1};
  Adam small({{p.data(), g.data(), 2, DType::Float32}}, AdamOptions{});
  small.step();
  Adam other({{q.data(), gq.data(), 3, DType::Float32}}, AdamOptions{0.5});
  other.step();
  const std::vector<unsigned char> before = checkpoint::encode(other.state_dict());
  CHECK_THROWS(std::invalid_argument, other.load_state_dict(small.state_dict()));  // 2 vs 3 elements
  CHECK(checkpoint::encode(other.state_dict()) == before);
  Adam two_groups(std::vector<Adam::Group>{{{{p.data(), g.data(), 2, DType::Float32}}, {}},
                                           {{{q.data(), gq.data(), 3, DType::Float32}}, {}}});
  CHECK_THROWS(std::invalid_argument, two_groups.load_state_dict(small.state_dict()));
}

TEST(bad_options_and_parameters_throw) {
  std::vector<float> p = {1}, g = {1};
  const std::vector<ParamView> ps = {{p.data(), g.data(), 1, DType::Float32}};
  CHECK_THROWS(std::invalid_argument, SGD(ps, SgdOptions{-0.1}));
  CHECK_THROWS(std::invalid_argument, SGD(ps, SgdOptions{0.1, 0.0, 0.0, 0.0, true}));
  CHECK_THROWS(std::invalid_argument, Adam(ps, AdamOptions{1e-3, 1.0}));
  CHECK_THROWS(std::invalid_argument, Adam(ps, AdamOptions{1e-3, 0.9, 0.999, -1.0}));
  CHECK_THROWS(std::invalid_argument, RMSprop(ps, RmspropOptions{std::nan("")}));
  CHECK_THROWS(std::invalid_argument, AdamW(std::vector<ParamView>{}));
  CHECK_THROWS(std::invalid_argument, AdamW({ps[0], ps[0]}));  // the same memory twice
  CHECK_THROWS(std::invalid_argument, AdamW({{p.data(), g.data(), 1, static_cast<DType>(7)}}));
  AdamW opt(ps);
  opt.param_groups()[0].options.lr = -1;  // edited between steps: checked before any update
  CHECK_THROWS(std::invalid_argument, opt.step());
  CHECK(p[0] == 1.0f);
}

TEST(null_grads_are_skipped_and_get_no_state) {
  std::vector<float> a = {1, 2}, ga = {1, 1}, b = {3, 4};
  Adam opt({{a.data(), ga.data(), 2, DType::Float32}, {b.data(), nullptr, 2, DType::Float32}}, AdamOptions{});
  opt.step();
  CHECK(b[0] == 3 && b[1] == 4);
  CHECK(a[0] != 1);
  const checkpoint::Document doc = opt.state_dict();
  const checkpoint::Value* state = doc.root.find(std::string("state"));
  CHECK(state->find(int64_t(0)) != nullptr && state->find(int64_t(1)) == nullptr);
  opt.zero_grad();
  CHECK(ga[0] == 0 && ga[1] == 0);
}

TEST(bfloat16_parameters_keep_float32_state) {
  // bf16 params and grads, float32 state: each step equals a float32 step on the widened
  // values, rounded once to bf16 (here checked against the float32 C++ path itself).
  const int n = 64;
  std::vector<BFloat16> p(n), g(n);
  std::vector<float> pf(n), gf(n);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < n; ++i) p[i].bits = float_to_bfloat16(normal(rng));
  AdamW opt({{p.data(), g.data(), n, DType::BFloat16}});
  for (int step = 0; step < 5; ++step) {
    for (int i = 0; i < n; ++i) {
      g[i].bits = float_to_bfloat16(normal(rng));
      gf[i] = bfloat16_to_float(g[i].bits);
      pf[i] = bfloat16_to_float(p[i].bits);
    }
    AdamW reference({{pf.data(), gf.data(), n, DType::Float32}});
    reference.load_state_dict(opt.state_dict());  // float32 state either way
    opt.step();
    reference.step();
    for (int i = 0; i < n; ++i) CHECK(p[i].bits == float_to_bfloat16(pf[i]));
  }
  const checkpoint::Document doc = opt.state_dict();
  CHECK(doc.arrays.size() == 2 && doc.arrays[0].dtype == DType::Float32);
}

TEST(clip_grad_norm_and_value) {
  std::vector<float> p1(3), g1 = {3, 0, 0}, p2(2);
  std::vector<double> g2 = {0, 4};
  const std::vector<ParamView> ps = {{p1.data(), g1.data(), 3, DType::Float32},
                                     {p2.data(), g2.data(), 2, DType::Float64},
                                     {p1.data(), nullptr, 3, DType::Float32}};
  CHECK(check::close(clip_grad_norm(ps, 1.0, 1.0), 7.0, 1e-12));
  CHECK(check::close(g1[0], 3.0 / (7 + 1e-6), 1e-6));
  std::vector<float> h = {3, -4};
  const std::vector<ParamView> one = {{p1.data(), h.data(), 2, DType::Float32}};
  CHECK(check::close(clip_grad_norm(one, 100.0), 5.0, 1e-12));
  CHECK(h[0] == 3 && h[1] == -4);  // within max_norm: unchanged
  CHECK(clip_grad_norm(one, 1.0, INFINITY) == 4.0);
  h = {NAN, 1};
  CHECK_THROWS(std::domain_error, clip_grad_norm(one, 1.0, 2.0, true));
  CHECK(std::isnan(h[0]) && h[1] == 1);
  h = {-5, 0.5f};
  clip_grad_value(one, 1.0);
  CHECK(h[0] == -1 && h[1] == 0.5f);
}

// The deferred clip (docs/mixed-precision.md#fused-clipping): opt.clip_grad_norm then opt.step()
// gives the bits of genesis::clip_grad_norm then step(), for several rules, and writes no gradient.
template <typename Opt, typename Options>
void check_deferred_clip(const Options& options) {
  const int n = 37;
  std::vector<float> pf(n), pe(n), gf(n), ge(n), hf(5), he(5), kf(5), ke(5);
  for (int i = 0; i < n; ++i) pf[i] = pe[i] = std::sin(0.3f * i);
  for (int i = 0; i < 5; ++i) hf[i] = he[i] = 0.1f * i - 0.2f;
  Opt fused({{pf.data(), gf.data(), n, DType::Float32}, {hf.data(), kf.data(), 5, DType::Float32}}, options);
  Opt eager({{pe.data(), ge.data(), n, DType::Float32}, {he.data(), ke.data(), 5, DType::Float32}}, options);
  const std::vector<ParamView> eager_views = {{pe.data(), ge.data(), n, DType::Float32},
                                              {he.data(), ke.data(), 5, DType::Float32}};
  for (int step = 0; step < 12; ++step) {
    for (int i = 0; i < n; ++i) gf[i] = ge[i] = 3.0f * std::cos(0.7f * i + step);
    for (int i = 0; i < 5; ++i) kf[i] = ke[i] = 0.5f * i - step;
    const std::vector<float> before = gf;
    const double max_norm = step % 3 == 0 ? 1e3 : 0.5;  // every third step within the bound
    const double a = fused.clip_grad_norm(max_norm);
    const double b = clip_grad_norm(eager_views, max_norm);
    CHECK(a == b);
    CHECK(gf == before);  // nothing written: the coefficient waits for the step
    if (step % 4 == 1) {
      fused.clip_grad_value(0.01);
      clip_grad_value(eager_views, 0.01);
    }
    fused.step();
    eager.step();
    CHECK(gf == before);
    CHECK(pf == pe && hf == he);
  }
}

TEST(deferred_clip_matches_eager_clip) {
  check_deferred_clip<AdamW>(adamw_defaults());
  SgdOptions sgd;
  sgd.lr = 0.1;
  sgd.momentum = 0.9;
  check_deferred_clip<SGD>(sgd);
  check_deferred_clip<RMSprop>(RmspropOptions{});
}

TEST(deferred_clip_errors_and_lifetime) {
  std::vector<float> p = {1, 2}, g = {30, 40};
  SgdOptions o;
  o.lr = 1.0;
  SGD opt({{p.data(), g.data(), 2, DType::Float32}}, o);
  CHECK(opt.clip_grad_norm(1.0) == 50.0);
  CHECK_THROWS(std::logic_error, opt.clip_grad_norm(1.0));  // twice before a step
  opt.zero_grad();                                          // discards it
  g = {3, 4};
  opt.step();  // no clip: the plain step
  CHECK(p[0] == 1 - 3 && p[1] == 2 - 4);
  g = {30, 40};
  opt.clip_grad_norm(5.0);
  opt.step();  // clipped to norm 5 (within rounding)
  CHECK(check::close(p[0], -2 - 3, 1e-5) && check::close(p[1], -2 - 4, 1e-5));
  opt.step();  // the coefficient was consumed: unclipped
  CHECK(check::close(p[0], -5 - 30, 1e-5) && check::close(p[1], -6 - 40, 1e-5));
  opt.clip_grad_value(1.0);
  CHECK_THROWS(std::logic_error, opt.clip_grad_norm(1.0));  // after clip_grad_value
  CHECK_THROWS(std::invalid_argument, opt.clip_grad_value(-1.0));
  opt.step();
  CHECK(check::close(p[0], -35 - 1, 1e-6) && check::close(p[1], -46 - 1, 1e-6));
  g = {NAN, 1};
  CHECK_THROWS(std::domain_error, opt.clip_grad_norm(1.0, 2.0, true));
  opt.clip_grad_norm(1.0);  // nothing was recorded by the failed call
}
