// genesis::Muon against a float64 Muon with a triple-loop Newton-Schulz written here from
// torch.optim.Muon's algorithm (torch 2.13); torch's errors, param groups, state_dict, the
// deferred clip, 16-bit parameters and thread-count independence.
#include <genesis/clip.h>
#include <genesis/optim.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>

#include "check.h"
#include "muon_fixture.h"

using namespace genesis;

namespace {

constexpr int kSteps = 25;

using Matrix = std::vector<double>;  // row-major

// Normal values rounded to float, so that float32 and float64 runs start from the same numbers.
Matrix random_matrix(std::mt19937& rng, int64_t n) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Matrix m(static_cast<size_t>(n));
  for (double& x : m) x = static_cast<float>(normal(rng));
  return m;
}

Matrix naive_matmul(const Matrix& a, const Matrix& b, int64_t m, int64_t n, int64_t k) {
  Matrix c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}

Matrix transposed(const Matrix& a, int64_t rows, int64_t cols) {
  Matrix t(a.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = a[i * cols + j];
  return t;
}

// torch.optim.Muon's _zeropower_via_newtonschulz, in float64.
Matrix reference_ns(const Matrix& g, int64_t rows, int64_t cols, const MuonOptions& o) {
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows, c = tall ? rows : cols;
  Matrix x = tall ? transposed(g, rows, cols) : g;
  double norm = 0;
  for (double v : x) norm += v * v;
  norm = std::max(std::sqrt(norm), o.eps);
  for (double& v : x) v /= norm;
  const auto [a, b, cc] = o.ns_coefficients;
  for (int64_t s = 0; s < o.ns_steps; ++s) {
    const Matrix gram = naive_matmul(x, transposed(x, r, c), r, r, c);
    const Matrix gram2 = naive_matmul(gram, gram, r, r, r);
    Matrix poly(gram.size());
    for (size_t i = 0; i < poly.size(); ++i) poly[i] = b * gram[i] + cc * gram2[i];
    const Matrix px = naive_matmul(poly, x, r, c, r);
    for (size_t i = 0; i < x.size(); ++i) x[i] = a * x[i] + px[i];
  }
  return tall ? transposed(x, r, c) : x;
}

// One matrix parameter of a reference run: its value, gradients per step and momentum buffer.
struct RefParam {
  int64_t rows, cols;
  Matrix p, buf;
};

// The float64 Muon step (torch's _single_tensor_muon, lerps written out).
void reference_step(RefParam& q, const Matrix& g, const MuonOptions& o) {
  if (q.buf.empty()) q.buf.assign(g.size(), 0.0);
  Matrix u(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    q.buf[i] += (1 - o.momentum) * (g[i] - q.buf[i]);
    u[i] = o.nesterov ? g[i] + o.momentum * (q.buf[i] - g[i]) : q.buf[i];
  }
  const Matrix update = reference_ns(u, q.rows, q.cols, o);
  const double adjusted = muon_adjusted_lr(o.lr, o.adjust_lr_fn, q.rows, q.cols);
  for (size_t i = 0; i < q.p.size(); ++i) q.p[i] = q.p[i] * (1 - o.lr * o.weight_decay) - adjusted * update[i];
}

struct Shape {
  int64_t rows, cols;
};
// Tall, wide and square; 260 columns cross the product's 256-deep blocks.
constexpr Shape kShapes[] = {{9, 4}, {5, 12}, {6, 6}, {21, 260}};

// float32 and float64 genesis::Muon (ns_dtype float32 / float64) on every shape in one group,
// kSteps steps, against the float64 reference: the largest error relative to the largest
// parameter value.
void check_against_reference(const char* label, const MuonOptions& options) {
  std::mt19937 rng(11);
  std::vector<RefParam> ref;
  std::vector<std::vector<Matrix>> grads;
  for (const Shape& s : kShapes) {
    ref.push_back({s.rows, s.cols, random_matrix(rng, s.rows * s.cols), {}});
    grads.emplace_back();
    for (int t = 0; t < kSteps; ++t) grads.back().push_back(random_matrix(rng, s.rows * s.cols));
  }
  std::vector<std::vector<float>> pf, gf;
  std::vector<std::vector<double>> pd, gd;
  std::vector<ParamView> vf, vd;
  for (const RefParam& q : ref) {
    pf.emplace_back(q.p.begin(), q.p.end());
    pd.push_back(q.p);
    gf.emplace_back(q.p.size());
    gd.emplace_back(q.p.size());
  }
  for (size_t i = 0; i < ref.size(); ++i) {
    const std::vector<int64_t> shape = {ref[i].rows, ref[i].cols};
    vf.push_back({pf[i].data(), gf[i].data(), int64_t(pf[i].size()), DType::Float32, Device::CPU, shape});
    vd.push_back({pd[i].data(), gd[i].data(), int64_t(pd[i].size()), DType::Float64, Device::CPU, shape});
  }
  MuonOptions o64 = options;
  o64.ns_dtype = DType::Float64;
  Muon opt32(vf, options), opt64(vd, o64);
  for (int t = 0; t < kSteps; ++t) {
    for (size_t i = 0; i < ref.size(); ++i) {
      std::copy(grads[i][t].begin(), grads[i][t].end(), gf[i].begin());
      gd[i] = grads[i][t];
      reference_step(ref[i], grads[i][t], options);
    }
    opt32.step();
    opt64.step();
  }
  for (size_t i = 0; i < ref.size(); ++i) {
    double scale = 0, err32 = 0, err64 = 0;
    for (size_t j = 0; j < ref[i].p.size(); ++j) {
      scale = std::max(scale, std::fabs(ref[i].p[j]));
      err32 = std::max(err32, std::fabs(pf[i][j] - ref[i].p[j]));
      err64 = std::max(err64, std::fabs(pd[i][j] - ref[i].p[j]));
    }
    // float32: 25 steps of 5 NS iterations, each of three float32 products of up to 260 terms
    // per sum, rounded into the parameters: the largest error seen is 1.1e-6 of the largest
    // value (float64: 4e-16); the bounds leave about 10x (float64: 250x).
    if (!(err32 <= 1e-5 * scale) || !(err64 <= 1e-13 * scale)) {
      std::printf("  %s %lldx%lld: float32 error %.3g, float64 error %.3g, largest value %.3g\n", label,
                  (long long)ref[i].rows, (long long)ref[i].cols, err32, err64, scale);
      CHECK(false);
    }
  }
}

MuonOptions lr_options(double lr) {
  MuonOptions o;
  o.lr = lr;
  return o;
}

}  // namespace

TEST(muon_matches_float64_reference) {
  for (bool nesterov : {true, false})
    for (double weight_decay : {0.0, 0.1})
      for (const char* fn : {"", "original", "match_rms_adamw"}) {
        MuonOptions o = lr_options(0.02);
        o.nesterov = nesterov;
        o.weight_decay = weight_decay;
        if (*fn) o.adjust_lr_fn = fn;
        const std::string label = std::string("nesterov=") + (nesterov ? "1" : "0") +
                                  " wd=" + std::to_string(weight_decay) + " fn=" + (*fn ? fn : "None");
        check_against_reference(label.c_str(), o);
      }
  MuonOptions custom = lr_options(0.05);
  custom.momentum = 0.8;
  custom.ns_steps = 3;
  custom.ns_coefficients = {2.0, -1.5, 0.5};
  custom.eps = 1e-5;
  check_against_reference("custom coefficients", custom);
  MuonOptions none = lr_options(0.01);
  none.ns_steps = 0;  // the normalized momentum update itself
  check_against_reference("ns_steps=0", none);
}

TEST(muon_param_groups_use_their_own_options) {
  std::mt19937 rng(2);
  RefParam a{8, 3, random_matrix(rng, 24), {}}, b{4, 10, random_matrix(rng, 40), {}};
  std::vector<float> pa(a.p.begin(), a.p.end()), pb(b.p.begin(), b.p.end()), ga(24), gb(40);
  MuonOptions first = lr_options(0.03), second = lr_options(0.01);
  second.nesterov = false;
  second.weight_decay = 0.0;
  second.adjust_lr_fn = "match_rms_adamw";
  Muon opt(std::vector<Muon::Group>{{{{pa.data(), ga.data(), 24, DType::Float32, Device::CPU, {8, 3}}}, first},
                                    {{{pb.data(), gb.data(), 40, DType::Float32, Device::CPU, {4, 10}}}, second}});
  for (int t = 0; t < kSteps; ++t) {
    const Matrix g1 = random_matrix(rng, 24), g2 = random_matrix(rng, 40);
    std::copy(g1.begin(), g1.end(), ga.begin());
    std::copy(g2.begin(), g2.end(), gb.begin());
    reference_step(a, g1, first);
    reference_step(b, g2, second);
    opt.step();
  }
  for (size_t i = 0; i < pa.size(); ++i) CHECK(check::close(pa[i], a.p[i], 0, 2e-5));
  for (size_t i = 0; i < pb.size(); ++i) CHECK(check::close(pb[i], b.p[i], 0, 2e-5));
}

TEST(muon_refuses_what_torch_refuses) {
  std::vector<float> p(24, 1.0f), g(24, 1.0f);
  const ParamView matrix{p.data(), g.data(), 24, DType::Float32, Device::CPU, {4, 6}};
  auto message = [&](const ParamView& view, const MuonOptions& o) -> std::string {
    try {
      Muon opt({view}, o);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  const std::string prefix = "Muon only supports 2D parameters whereas we found a parameter with size: ";
  CHECK(message({p.data(), g.data(), 24, DType::Float32}, {}) == prefix + "(24,)");  // no shape: 1-D
  CHECK(message({p.data(), g.data(), 24, DType::Float32, Device::CPU, {2, 3, 4}}, {}) == prefix + "(2, 3, 4)");
  CHECK(message(matrix, lr_options(-1)) == "Learning rate should be >= 0 but is: -1.0");
  MuonOptions o;
  o.momentum = -0.5;
  CHECK(message(matrix, o) == "momentum should be >= 0 but is: -0.5");
  o = {};
  o.weight_decay = -0.1;
  CHECK(message(matrix, o) == "weight decay should be >= 0 but is: -0.1");
  o = {};
  o.adjust_lr_fn = "cosine";
  CHECK(message(matrix, o) == "Adjust learning rate function cosine is not supported");
  o = {};
  o.ns_steps = 100;
  CHECK(message(matrix, o) == "Number of steps must be less than 100 for computational efficiency");
  o.ns_steps = -1;
  CHECK(message(matrix, o) == "ns_steps must be a non-negative integer, got -1");
  o = {};
  o.ns_dtype = DType::BFloat16;
  CHECK(message(matrix, o).find("float32 or float64, not bfloat16") != std::string::npos);
  CHECK(message(matrix, {}).empty());

  // add_param_group checks the same; options edited between steps are checked before any update.
  std::vector<float> q(5, 1.0f), gq(5, 1.0f);
  Muon opt({matrix});
  CHECK_THROWS(std::invalid_argument, opt.add_param_group({{{q.data(), gq.data(), 5, DType::Float32}}, {}}));
  Muon::Group eight_bit{{{q.data(), gq.data(), 5, DType::Float32, Device::CPU, {1, 5}}}, {}};
  eight_bit.int8_state = true;
  CHECK_THROWS(std::invalid_argument, opt.add_param_group(eight_bit));
  CHECK(opt.param_groups().size() == 1);
  opt.param_groups()[0].options.ns_steps = 200;
  CHECK_THROWS(std::invalid_argument, opt.step());
  CHECK(p[0] == 1.0f);
  opt.param_groups()[0].options.ns_steps = 5;
  opt.param_groups()[0].params[0].shape = {24};
  CHECK_THROWS(std::invalid_argument, opt.step());
  CHECK(p[0] == 1.0f);
}

TEST(muon_state_dict_round_trip_continues_identically) {
  std::mt19937 rng(9);
  const Matrix p0 = random_matrix(rng, 35), q0 = random_matrix(rng, 12);
  std::vector<float> a(p0.begin(), p0.end()), ga(35), b(p0.begin(), p0.end()), gb(35);
  std::vector<float> c(q0.begin(), q0.end()), gc(12), d(q0.begin(), q0.end()), gd(12);
  MuonOptions o = lr_options(0.02);
  o.adjust_lr_fn = "match_rms_adamw";
  o.ns_coefficients = {3.0, -4.0, 2.0};
  o.ns_steps = 4;
  auto views = [](std::vector<float>& p, std::vector<float>& g, std::vector<float>& p2, std::vector<float>& g2) {
    return std::vector<ParamView>{{p.data(), g.data(), 35, DType::Float32, Device::CPU, {7, 5}},
                                  {p2.data(), g2.data(), 12, DType::Float32, Device::CPU, {3, 4}}};
  };
  Muon straight(views(a, ga, c, gc), o);
  auto resumed = std::make_unique<Muon>(views(b, gb, d, gd), o);
  for (int t = 0; t < 20; ++t) {
    const Matrix g1 = random_matrix(rng, 35), g2 = random_matrix(rng, 12);
    std::copy(g1.begin(), g1.end(), ga.begin());
    std::copy(g1.begin(), g1.end(), gb.begin());
    std::copy(g2.begin(), g2.end(), gc.begin());
    std::copy(g2.begin(), g2.end(), gd.begin());
    straight.step();
    resumed->step();
    if (t == 9) {
      const std::vector<unsigned char> bytes = checkpoint::encode(resumed->state_dict());
      const checkpoint::Document doc = checkpoint::decode(bytes.data(), bytes.size());
      resumed = std::make_unique<Muon>(views(b, gb, d, gd));  // default options: the load restores them
      resumed->load_state_dict(doc);
      const MuonOptions& loaded = resumed->param_groups()[0].options;
      CHECK(loaded.lr == 0.02 && loaded.adjust_lr_fn == std::optional<std::string>("match_rms_adamw"));
      CHECK(loaded.ns_steps == 4 && loaded.ns_coefficients == o.ns_coefficients);
    }
  }
  CHECK(a == b && c == d);  // bit for bit

  // torch's param_group layout and state names, with genesis's ns_dtype.
  const checkpoint::Document doc = straight.state_dict();
  const checkpoint::Value& group = doc.root.find(std::string("param_groups"))->items[0];
  std::vector<std::string> keys;
  for (const checkpoint::Value& k : group.keys) keys.push_back(k.text);
  CHECK((keys == std::vector<std::string>{"lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps",
                                          "ns_steps", "adjust_lr_fn", "ns_dtype", "params"}));
  CHECK(group.find(std::string("ns_steps"))->kind == checkpoint::Value::Kind::Int);
  CHECK(group.find(std::string("ns_coefficients"))->kind == checkpoint::Value::Kind::Tuple);
  CHECK(group.find(std::string("ns_dtype"))->text == "float32");
  const checkpoint::Value& state = *doc.root.find(std::string("state"))->find(int64_t(0));
  CHECK(state.keys.size() == 1 && state.keys[0].text == "momentum_buffer");
  CHECK((doc.arrays[0].shape == std::vector<int64_t>{7, 5}));

  // A saved None adjust_lr_fn and a missing ns_dtype (a torch checkpoint) load; bfloat16 does not.
  Muon other(views(b, gb, d, gd), o);
  checkpoint::Document torch_like = straight.state_dict();
  checkpoint::Value& saved = torch_like.root.items[1].items[0];  // param_groups[0]
  for (size_t k = 0; k < saved.keys.size(); ++k)
    if (saved.keys[k].text == "adjust_lr_fn") saved.items[k] = checkpoint::Value::none();
  other.load_state_dict(torch_like);
  CHECK(!other.param_groups()[0].options.adjust_lr_fn);
  for (size_t k = 0; k < saved.keys.size(); ++k)
    if (saved.keys[k].text == "ns_dtype") saved.items[k] = checkpoint::Value::of(std::string("bfloat16"));
  CHECK_THROWS(std::invalid_argument, other.load_state_dict(torch_like));
  CHECK(other.param_groups()[0].options.ns_dtype == DType::Float32);
}

TEST(muon_thread_count_does_not_change_bits) {
  std::mt19937 rng(4);
  const Matrix p0 = random_matrix(rng, 300 * 90);
  std::vector<std::vector<float>> result;
  const int before = cpu::num_threads();
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    std::mt19937 grads(8);
    std::vector<float> p(p0.begin(), p0.end()), g(p.size());
    Muon opt({{p.data(), g.data(), int64_t(p.size()), DType::Float32, Device::CPU, {300, 90}}}, lr_options(0.02));
    for (int t = 0; t < 3; ++t) {
      const Matrix gd = random_matrix(grads, int64_t(g.size()));
      std::copy(gd.begin(), gd.end(), g.begin());
      opt.step();
    }
    result.push_back(p);
  }
  cpu::set_num_threads(before);
  CHECK(result[0] == result[1]);
  CHECK(result[0] != std::vector<float>(p0.begin(), p0.end()));
}

TEST(muon_deferred_clip_matches_eager_clip) {
  std::vector<float> pf(20), pe(20), gf(20), ge(20);
  for (int i = 0; i < 20; ++i) pf[i] = pe[i] = std::sin(0.3f * i);
  const MuonOptions o = lr_options(0.05);
  Muon fused({{pf.data(), gf.data(), 20, DType::Float32, Device::CPU, {4, 5}}}, o);
  Muon eager({{pe.data(), ge.data(), 20, DType::Float32, Device::CPU, {4, 5}}}, o);
  const std::vector<ParamView> eager_views = {{pe.data(), ge.data(), 20, DType::Float32}};
  for (int step = 0; step < 10; ++step) {
    for (int i = 0; i < 20; ++i) gf[i] = ge[i] = 3.0f * std::cos(0.7f * i + step);
    const std::vector<float> before = gf;
    CHECK(fused.clip_grad_norm(0.5) == clip_grad_norm(eager_views, 0.5));
    if (step % 3 == 1) {
      fused.clip_grad_value(0.01);
      clip_grad_value(eager_views, 0.01);
    }
    fused.step();
    eager.step();
    CHECK(gf == before);  // the gradients keep their values
    CHECK(pf == pe);
  }
}

TEST(muon_bfloat16_parameters_keep_float32_state) {
  // bfloat16 parameters and gradients: float32 momentum buffer, the update computed in float32
  // and rounded once per step, so the run follows the float64 reference to bfloat16 precision.
  std::mt19937 rng(6);
  RefParam ref{6, 10, random_matrix(rng, 60), {}};
  std::vector<BFloat16> p(60), g(60);
  for (size_t i = 0; i < 60; ++i) {
    p[i].bits = float_to_bfloat16(float(ref.p[i]));
    ref.p[i] = bfloat16_to_float(p[i].bits);
  }
  Muon opt({{p.data(), g.data(), 60, DType::BFloat16, Device::CPU, {6, 10}}}, lr_options(0.02));
  for (int t = 0; t < 10; ++t) {
    Matrix gd = random_matrix(rng, 60);
    for (size_t i = 0; i < 60; ++i) {
      g[i].bits = float_to_bfloat16(float(gd[i]));
      gd[i] = bfloat16_to_float(g[i].bits);
    }
    reference_step(ref, gd, lr_options(0.02));
    opt.step();
  }
  for (size_t i = 0; i < 60; ++i) CHECK(check::close(bfloat16_to_float(p[i].bits), ref.p[i], 0, 0.05));
  const checkpoint::Document doc = opt.state_dict();
  CHECK(doc.arrays.size() == 1 && doc.arrays[0].dtype == DType::Float32);
}

TEST(muon_skips_null_grads_and_takes_empty_matrices) {
  std::vector<float> a(6, 1.0f), ga(6, 0.5f), b(6, 2.0f);
  float unused = 0;
  Muon opt({{a.data(), ga.data(), 6, DType::Float32, Device::CPU, {2, 3}},
            {b.data(), nullptr, 6, DType::Float32, Device::CPU, {3, 2}},
            {&unused, &unused, 0, DType::Float32, Device::CPU, {0, 4}}});
  opt.step();
  CHECK(b == std::vector<float>(6, 2.0f));
  CHECK(a[0] != 1.0f && std::isfinite(a[0]));
  const checkpoint::Document doc = opt.state_dict();
  const checkpoint::Value* state = doc.root.find(std::string("state"));
  CHECK(state->find(int64_t(0)) && !state->find(int64_t(1)) && state->find(int64_t(2)));
}

// The run of muon_fixture.h written by Python (tests/cpp/data/python_muon.genesis, made by
// tests/cpp/data/make_python_muon.py: genesis.optim.Muon over torch parameters, ns_dtype="float32",
// Newton-Schulz through torch.mm) and computed here. The momentum buffers depend on the
// gradients alone: the same bits. The parameters went through each side's float32 matrix
// products: within float32 rounding of each other.
TEST(muon_reads_a_checkpoint_written_by_python) {
  const MuonFixture computed;
  const checkpoint::Document doc = checkpoint::load_file(GENESIS_TEST_DATA "/python_muon.genesis");
  const checkpoint::Value* params = doc.root.find(std::string("params"));
  CHECK(params && params->items.size() == computed.params.size());
  std::vector<std::vector<float>> values;
  values.reserve(computed.params.size());  // the views point into them
  std::vector<ParamView> views;
  for (size_t k = 0; params && k < params->items.size(); ++k) {
    const MuonFixture::Matrix& m = computed.params[k];
    const checkpoint::Array& array = doc.arrays.at(params->items[k].array);
    CHECK(array.dtype == DType::Float32 && (array.shape == std::vector<int64_t>{m.rows, m.cols}));
    const float* torch_value = reinterpret_cast<const float*>(array.bytes.data());
    double largest = 0;
    for (size_t i = 0; i < m.value.size(); ++i)
      largest = std::max(largest, double(std::fabs(torch_value[i] - m.value[i])));
    CHECK(largest <= 1e-6);  // 2 units of the last place of the largest values (about 0.7)
    values.emplace_back(m.value.size());
    views.push_back({values.back().data(), nullptr, m.rows * m.cols, DType::Float32, Device::CPU, {m.rows, m.cols}});
  }
  Muon loaded(std::vector<Muon::Group>{{{views[0], views[1]}, {}}, {{views[2]}, {}}});
  loaded.load_state_dict(doc);
  const MuonOptions& second = loaded.param_groups()[1].options;
  CHECK(second.lr == 0.01 && second.momentum == 0.9 && !second.nesterov && second.weight_decay == 0.0);
  CHECK(second.adjust_lr_fn == std::optional<std::string>("match_rms_adamw"));
  CHECK(checkpoint::encode(loaded.state_dict()) == checkpoint::encode(computed.opt.state_dict()));
}
