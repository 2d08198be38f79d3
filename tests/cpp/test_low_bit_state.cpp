// 8-bit optimizer state through the C++ API (docs/low-bit-state.md): the same codes and
// parameters as the core's maps applied by hand, small tensors keep float32 state, checkpoints
// round-trip bit for bit and convert float32 <-> 8-bit state on load.
#include <genesis/optim.h>
#include <genesis/quantized.h>

#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>

#include "check.h"

using namespace genesis;

namespace {

std::vector<float> randn(std::mt19937& rng, int n, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

ParamGroup<AdamOptions> int8_group(std::vector<ParamView> params, int64_t min_size = kDefaultMin8BitSize) {
  ParamGroup<AdamOptions> g{std::move(params), adamw_defaults()};
  g.options.lr = 1e-2;
  g.int8_state = true;
  g.min_8bit_size = min_size;
  return g;
}

const checkpoint::Array* state_array(const checkpoint::Document& doc, int64_t index, const std::string& name) {
  const checkpoint::Value* st = doc.root.find(std::string("state"))->find(index);
  const checkpoint::Value* v = st ? st->find(name) : nullptr;
  return v ? &doc.arrays.at(v->array) : nullptr;
}

// The entry `key` of a Dict value, for editing a document in place.
checkpoint::Value& entry(checkpoint::Value& dict, const checkpoint::Value& key) {
  for (size_t i = 0; i < dict.keys.size(); ++i)
    if (dict.keys[i].kind == key.kind && dict.keys[i].text == key.text && dict.keys[i].integer == key.integer)
      return dict.items[i];
  throw std::out_of_range("no such key");
}

}  // namespace

TEST(int8_state_matches_one_step_by_hand_and_keeps_small_tensors_float32) {
  std::mt19937 rng(3);
  const int n = 5000, small = 100;
  std::vector<float> p = randn(rng, n), g = randn(rng, n), q = randn(rng, small), gq = randn(rng, small);
  const std::vector<float> p0 = p;
  AdamW opt({int8_group({{p.data(), g.data(), n, DType::Float32}, {q.data(), gq.data(), small, DType::Float32}})});
  opt.step();
  const checkpoint::Document doc = opt.state_dict();
  const checkpoint::Array* m = state_array(doc, 0, "exp_avg");
  const checkpoint::Array* m_scale = state_array(doc, 0, "exp_avg_absmax");
  CHECK(m && m->dtype == DType::UInt8 && m->numel() == n);
  CHECK(m_scale && m_scale->dtype == DType::Float32 && m_scale->numel() == quant_blocks(n));
  CHECK(state_array(doc, 1, "exp_avg")->dtype == DType::Float32);
  CHECK(!state_array(doc, 1, "exp_avg_absmax"));
  // After one step m = 0.1 g exactly as the float update computes it; its codes are the map's.
  std::vector<float> m_ref(n);
  for (int i = 0; i < n; ++i) m_ref[i] = 0.0f + 0.1f * (g[i] - 0.0f);
  std::vector<uint8_t> codes(n);
  std::vector<float> scales(quant_blocks(n));
  quantize_array(m_ref.data(), n, codes.data(), scales.data(), false);
  CHECK(std::memcmp(codes.data(), m->bytes.data(), n) == 0);
  CHECK(std::memcmp(scales.data(), m_scale->bytes.data(), scales.size() * 4) == 0);
  // The first Adam step moves every parameter by about lr (m / sqrt(v) = sign(g)).
  for (int i = 0; i < n; ++i) CHECK(check::close(std::fabs(p[i] - p0[i] * (1 - 1e-2f * 0.01f)), 1e-2, 1e-3));
}

// An empty parameter (an FSDP1 rank's empty shard, say) has nothing to quantize: with
// min_8bit_size 0 it keeps (empty) float32 state, and the step updates the others.
TEST(int8_state_with_min_size_zero_steps_an_empty_parameter) {
  std::mt19937 rng(5);
  const int n = 300;
  std::vector<float> p = randn(rng, n), g = randn(rng, n);
  float none = 0.0f, none_grad = 0.0f;  // non-null: a null gradient would mean "no gradient"
  AdamW opt({int8_group({{&none, &none_grad, 0, DType::Float32}, {p.data(), g.data(), n, DType::Float32}}, 0)});
  opt.step();
  opt.step();
  const checkpoint::Document doc = opt.state_dict();
  const checkpoint::Array* empty = state_array(doc, 0, "exp_avg");
  CHECK(empty && empty->dtype == DType::Float32 && empty->numel() == 0);
  CHECK(!state_array(doc, 0, "exp_avg_absmax"));
  const checkpoint::Array* codes = state_array(doc, 1, "exp_avg");
  CHECK(codes && codes->dtype == DType::UInt8);
}

TEST(int8_state_checkpoints_round_trip_and_convert) {
  std::mt19937 rng(5);
  const int n = 3000;
  std::vector<float> a = randn(rng, n), ga(n), b = a, gb(n), c = a, gc(n);
  AdamW straight({int8_group({{a.data(), ga.data(), n, DType::Float32}}, 0)});
  auto resumed = std::make_unique<AdamW>(
      std::vector<ParamGroup<AdamOptions>>{int8_group({{b.data(), gb.data(), n, DType::Float32}}, 0)});
  for (int t = 0; t < 12; ++t) {
    const std::vector<float> grad = randn(rng, n);
    ga = grad;
    gb = grad;
    straight.step();
    resumed->step();
    if (t == 5) {
      resumed->save("int8_state.gckpt");
      // A plain optimizer: the saved group's storage options (state_dtype "int8") come back.
      resumed = std::make_unique<AdamW>(std::vector<ParamView>{{b.data(), gb.data(), n, DType::Float32}});
      resumed->load("int8_state.gckpt");
      CHECK(resumed->param_groups()[0].int8_state && resumed->param_groups()[0].min_8bit_size == 0);
    }
  }
  CHECK(a == b);  // bit for bit
  // 8-bit state into a float32-state group (saved options edited): dequantized values.
  checkpoint::Document doc = straight.state_dict();
  const checkpoint::Array codes = *state_array(doc, 0, "exp_avg_sq");
  const checkpoint::Array scales = *state_array(doc, 0, "exp_avg_sq_absmax");
  checkpoint::Value& group = entry(doc.root, checkpoint::Value::of(std::string("param_groups"))).items[0];
  entry(group, checkpoint::Value::of(std::string("state_dtype"))) = checkpoint::Value::of(std::string("float32"));
  AdamW plain({{c.data(), gc.data(), n, DType::Float32}});
  plain.load_state_dict(doc);
  CHECK(!plain.param_groups()[0].int8_state);
  const checkpoint::Document fp = plain.state_dict();
  const checkpoint::Array* v = state_array(fp, 0, "exp_avg_sq");
  CHECK(v->dtype == DType::Float32);
  std::vector<float> expect(n);
  dequantize_array(codes.bytes.data(), reinterpret_cast<const float*>(scales.bytes.data()), n, expect.data(), true);
  CHECK(std::memcmp(expect.data(), v->bytes.data(), n * 4) == 0);
  // ... and float32 state into an 8-bit optimizer: quantized.
  AdamW again({int8_group({{c.data(), gc.data(), n, DType::Float32}}, 0)});
  again.load_state_dict(fp);  // a float32-state optimizer saves no state_dtype: again keeps int8
  const checkpoint::Document back = again.state_dict();
  CHECK(state_array(back, 0, "exp_avg_sq")->dtype == DType::UInt8);
  std::vector<uint8_t> requant(n);
  std::vector<float> rescale(quant_blocks(n));
  quantize_array(expect.data(), n, requant.data(), rescale.data(), true);
  CHECK(std::memcmp(requant.data(), state_array(back, 0, "exp_avg_sq")->bytes.data(), n) == 0);
  // Codes without their scales are refused.
  checkpoint::Document broken = straight.state_dict();
  checkpoint::Value& st =
      entry(entry(broken.root, checkpoint::Value::of(std::string("state"))), checkpoint::Value::of(int64_t(0)));
  entry(st, checkpoint::Value::of(std::string("exp_avg_absmax"))) = checkpoint::Value::of(1.0);
  bool threw = false;
  try {
    again.load_state_dict(broken);
  } catch (const checkpoint::CheckpointError&) {
    threw = true;
  }
  CHECK(threw);
}

TEST(int8_state_refuses_float64_parameters) {
  std::vector<double> p(5000), g(5000);
  bool threw = false;
  try {
    AdamW opt({int8_group({{p.data(), g.data(), 5000, DType::Float64}})});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
}
