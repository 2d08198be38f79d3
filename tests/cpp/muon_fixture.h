// The Muon run behind the cross-language fixtures (tests/cpp/data/cpp_muon.genesis, written by
// make_cpp_muon.cpp and read by tests/test_cpp_muon.py; tests/cpp/data/python_muon.genesis,
// written by tests/cpp/data/make_python_muon.py and read by test_checkpoint.cpp). Python
// repeats it: the same shapes, options, values and steps.
#pragma once

#include <genesis/optim.h>

#include <cstdint>
#include <vector>

struct MuonFixture {
  static constexpr int kSteps = 20;
  struct Matrix {
    int64_t rows, cols;
    std::vector<float> value, grad;
  };
  // A wide and a tall matrix in group 0 (torch's defaults, lr 0.02), a square one in group 1.
  std::vector<Matrix> params = {make(0, 5, 8), make(1, 9, 4), make(2, 6, 6)};
  genesis::Muon opt{groups()};  // declared after the arrays it points into

  MuonFixture() {
    for (int t = 0; t < kSteps; ++t) {
      for (int k = 0; k < 3; ++k) fill_grad(k, t);
      opt.step();
    }
  }

  // Exact in float32: both languages start from the same bits.
  static float initial(int k, int64_t i) { return float((i * 37 + k * 11) % 23 - 11) / 16.0f; }
  static float gradient(int k, int t, int64_t i) { return float((i * 13 + t * 7 + k * 5) % 19 - 9) / 8.0f; }

 private:
  static Matrix make(int k, int64_t rows, int64_t cols) {
    Matrix m{rows, cols, std::vector<float>(rows * cols), std::vector<float>(rows * cols)};
    for (int64_t i = 0; i < rows * cols; ++i) m.value[i] = initial(k, i);
    return m;
  }
  void fill_grad(int k, int t) {
    for (size_t i = 0; i < params[k].grad.size(); ++i) params[k].grad[i] = gradient(k, t, int64_t(i));
  }
  genesis::ParamView view(int k) {
    Matrix& m = params[k];
    return {m.value.data(),          m.grad.data(),        m.rows * m.cols,
            genesis::DType::Float32, genesis::Device::CPU, {m.rows, m.cols}};
  }
  std::vector<genesis::Muon::Group> groups() {
    genesis::MuonOptions first, second;
    first.lr = 0.02;
    second.lr = 0.01;
    second.momentum = 0.9;
    second.nesterov = false;
    second.weight_decay = 0.0;
    second.adjust_lr_fn = "match_rms_adamw";
    return {{{view(0), view(1)}, first}, {{view(2)}, second}};
  }
};
