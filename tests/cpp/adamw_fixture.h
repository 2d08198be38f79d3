// The AdamW run behind the cross-language checkpoint fixtures: the parameters, options and
// gradients of tests/cpp/data/make_python_adamw.py, stepped 3 times by the C++ API.
#pragma once

#include <genesis/optim.h>

#include <vector>

struct AdamwFixture {
  std::vector<float> p0 = {0.0f, 0.25f, 0.5f, 0.75f}, g0 = {0.5f, -1.0f, 2.0f, 0.25f};
  std::vector<float> p1 = std::vector<float>(6, 1.0f), g1 = std::vector<float>(6, -0.5f);
  genesis::AdamW opt{groups()};  // declared after the arrays it points into

  AdamwFixture() {
    for (int step = 0; step < 3; ++step) opt.step();
  }

 private:
  std::vector<genesis::AdamW::Group> groups() {
    using namespace genesis;
    AdamOptions base = adamw_defaults();
    base.lr = 0.002;
    base.beta1 = 0.8;
    base.beta2 = 0.95;
    base.amsgrad = true;
    AdamOptions first = base, second = base;
    first.lr = 0.01;
    second.weight_decay = 0.0;
    return {{{{p0.data(), g0.data(), 4, DType::Float32}}, first},
            {{{p1.data(), g1.data(), 6, DType::Float32}}, second}};
  }
};
