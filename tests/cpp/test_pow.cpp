// genesis::portable_pow (include/genesis/rules/pow.h), the rules' per-step coefficients: within
// an ulp of the long double pow() for integer exponents (every bias correction), within the
// documented few ulp plus |y log x| for the others, and the special values of the C library's.
#include <cmath>
#include <random>

#include "check.h"
#include "genesis/rules/pow.h"

namespace {

double ulps(double got, long double want) {
  return double(std::fabs((static_cast<long double>(got) - want) / want)) / std::ldexp(1.0, -52);
}

}  // namespace

TEST(portable_pow_of_integer_exponents_is_within_an_ulp) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> beta(0.5, 0.99999);
  double worst = 0.0;
  for (int i = 0; i < 200000; ++i) {
    const double x = beta(rng), t = double(1 + i % 100000);
    const long double want = std::pow(static_cast<long double>(x), static_cast<long double>(t));
    if (want > 1e-290L) worst = std::fmax(worst, ulps(genesis::portable_pow(x, t), want));
  }
  CHECK(worst <= 1.0);
  CHECK(genesis::portable_pow(0.9, 1.0) == 0.9);  // step 1: the beta itself, as torch's beta ** 1
  CHECK(genesis::portable_pow(0.5, 3.0) == 0.125);
  CHECK(genesis::portable_pow(-2.0, 3.0) == -8.0);
  CHECK(genesis::portable_pow(2.0, -2.0) == 0.25);
}

TEST(portable_pow_of_other_exponents_is_within_the_documented_bound) {
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<double> base(1e-3, 1e6), exponent(-3.0, 3.0);
  for (int i = 0; i < 200000; ++i) {
    const double x = base(rng), y = exponent(rng);
    const long double want = std::pow(static_cast<long double>(x), static_cast<long double>(y));
    const double bound = 8.0 + std::fabs(y * std::log(x));
    CHECK(ulps(genesis::portable_pow(x, y), want) <= bound);
  }
  CHECK(genesis::portable_pow(5.0, 0.0) == 1.0);
  CHECK(genesis::portable_pow(0.0, 0.5) == 0.0);
  CHECK(std::isinf(genesis::portable_pow(0.0, -0.5)));
  CHECK(std::isnan(genesis::portable_pow(-2.0, 0.5)));
  CHECK(std::isnan(genesis::portable_pow(NAN, 0.5)));
}

TEST(portable_pow_at_the_ends_of_the_range) {
  // The p-norms raise |g| (any float32 magnitude, inf) to p and take the p-th root of sums that
  // may overflow: infinities stay infinite, overflow is infinite (not NaN from the exact
  // products' splits), and the finite values up to 2^1024 stay close.
  const double inf = HUGE_VAL;
  CHECK(genesis::portable_pow(inf, 3.0) == inf);
  CHECK(genesis::portable_pow(-inf, 3.0) == -inf);
  CHECK(genesis::portable_pow(-inf, 2.0) == inf);
  CHECK(genesis::portable_pow(inf, -2.0) == 0.0);
  CHECK(genesis::portable_pow(inf, 1.0 / 3.0) == inf);
  CHECK(genesis::portable_pow(3.4e38, 10.0) == inf);
  CHECK(genesis::portable_pow(-3.4e38, 9.0) == -inf);
  CHECK(genesis::portable_pow(1e200, -3.0) == 0.0);
  CHECK(std::isnan(genesis::portable_pow(NAN, 3.0)));
  CHECK(genesis::portable_pow(0.0, 3.0) == 0.0);
  for (const double x : {0x1p500, 0x1.8p331, 3.4e38, 1e100}) {
    for (const double y : {2.0, 3.0, 4.0}) {
      const long double want = std::pow(static_cast<long double>(x), static_cast<long double>(y));
      if (want < 1.7e308L) CHECK(ulps(genesis::portable_pow(x, y), want) <= 8.0 + std::fabs(y * std::log(x)));
    }
  }
  // float32 magnitudes to the exponents clip_grad_norm_ users pass, and the root of their sums
  for (const double p : {3.0, 1.5, 0.5, 4.0, 7.25}) {
    for (const double x : {1e-30, 1e-7, 0.3, 1.0, 17.0, 1e10, 3.4e38}) {
      const long double want = std::pow(static_cast<long double>(x), static_cast<long double>(p));
      if (want < 1.7e308L) CHECK(ulps(genesis::portable_pow(x, p), want) <= 8.0 + std::fabs(p * std::log(x)));
      const long double root = std::pow(static_cast<long double>(x), 1.0L / p);
      CHECK(ulps(genesis::portable_pow(x, 1.0 / p), root) <= 8.0 + std::fabs(std::log(x) / p));
    }
  }
}
