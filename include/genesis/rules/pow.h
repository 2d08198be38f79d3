// x^y for the rules' per-step coefficients (bias corrections, NAdam's mu, ASGD's eta,
// Adafactor's decay), with the same bits on the CPU and on CUDA. The C library's pow() and
// CUDA's round independently (each within a few ulp of the true value), so float64 updates on
// the two backends differed wherever a coefficient's last bit did (seen on an H200: Adam, NAdam,
// RAdam, Adamax, LAMB and Adafactor in float64). This one is built from +, -, *, / and exact
// scaling by powers of two only, which both backends round alike: every genesis target is
// compiled without floating-point contraction (-ffp-contract=off, --fmad=false).
//
// An integer exponent (every step count) takes binary powering in double-double arithmetic
// (Dekker's exact products): x^1 is x exactly and x^t is within an ulp, as the C library's
// pow() is (in plain doubles each squaring would double the relative error: t ulp at step t).
// Any other exponent of a positive base takes exp(y * log(x)) with the series below: a few ulp,
// plus |y log x| ulp from the product. The p-norms of clip_grad_norm_ use it too (|g|^p and
// the p-th root of their sum: NOTE: [norm order]), so that CPU and CUDA give the same norm.
#pragma once

#include <cmath>
#include <cstdint>

#include "genesis/macros.h"

namespace genesis {
namespace pow_detail {

// ln 2 split so that k * kLn2Hi is exact for |k| < 2^21 (its low 21 bits are zero).
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700e+00;

// log(x) for finite x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s),
// s = (m - 1) / (m + 1), |s| <= 0.1716, summed to s^23 (the next term is under 1e-18).
GENESIS_HD double log_positive(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // [0.5, 1)
  if (m < 0.70710678118654752440) {
    m = m * 2.0;
    e -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double series = 1.0 / 23.0;
  for (int k = 10; k >= 0; --k) series = 1.0 / double(2 * k + 1) + s2 * series;
  return double(e) * kLn2Hi + (double(e) * kLn2Lo + 2.0 * s * series);
}

// exp(z): z = k ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^13 (the next term is
// under 4e-18), scaled by 2^k exactly.
GENESIS_HD double exp_of(double z) {
  if (z != z) return z;
  if (z > 709.79) return HUGE_VAL;
  if (z < -745.2) return 0.0;
  const double k = std::floor(z * kInvLn2 + 0.5);
  const double r = (z - k * kLn2Hi) - k * kLn2Lo;
  double series = 1.0;
  for (int n = 13; n >= 1; --n) series = 1.0 + r * series / double(n);
  return std::ldexp(series, int(k));
}

// A double-double number hi + lo, |lo| <= ulp(hi) / 2, and the product of two, exact to about
// 2^-100 relative: the Veltkamp split makes a * b = p + err exactly without a fused multiply-add.
struct Double2 {
  double hi, lo;
};
GENESIS_HD Double2 exact_product(double a, double b) {
  constexpr double kSplit = 134217729.0;  // 2^27 + 1
  const double ca = kSplit * a, cb = kSplit * b;
  const double ah = ca - (ca - a), al = a - ah;
  const double bh = cb - (cb - b), bl = b - bh;
  const double p = a * b;
  return {p, ((ah * bh - p) + ah * bl + al * bh) + al * bl};
}
GENESIS_HD Double2 times(Double2 x, Double2 y) {
  Double2 p = exact_product(x.hi, y.hi);
  p.lo = p.lo + (x.hi * y.lo + x.lo * y.hi);
  const double hi = p.hi + p.lo;
  return {hi, p.lo - (hi - p.hi)};
}

}  // namespace pow_detail

// x^y for a positive finite x and any y, or NaN/inf/0 at the ends of the range (above).
GENESIS_HD double general_pow(double x, double y) {
  if (x != x || y != y) return x + y;  // NaN
  if (x < 0.0) return NAN;             // a negative base to a non-integer power
  if (x == 0.0) return y > 0.0 ? 0.0 : HUGE_VAL;
  if (x == HUGE_VAL) return y > 0.0 ? HUGE_VAL : 0.0;
  return pow_detail::exp_of(y * pow_detail::log_positive(x));
}

GENESIS_HD double portable_pow(double x, double y) {
  if (y == 0.0) return 1.0;
  if (y == std::floor(y) && std::fabs(y) <= 9007199254740992.0) {  // an integer (2^53)
    uint64_t n = uint64_t(std::fabs(y));
    const bool negate = x < 0.0 && (n & 1u);  // an odd power keeps the sign
    if (std::fabs(x) == HUGE_VAL) return (y > 0.0 ? HUGE_VAL : 0.0) * (negate ? -1.0 : 1.0);
    pow_detail::Double2 result{1.0, 0.0}, base{x, 0.0};
    while (true) {
      if (n & 1u) result = pow_detail::times(result, base);
      n >>= 1;
      if (n == 0) break;
      base = pow_detail::times(base, base);
    }
    const double r = y < 0.0 ? 1.0 / (result.hi + result.lo) : result.hi + result.lo;
    // Once a factor passes 2^997 the exact products' splits overflow (inf - inf) and the
    // result is NaN although x is not: |x|^|y| is then at least 2^997, so the general path
    // (infinite, or 0 for a negative exponent, or the few finite values below 2^1024) is exact
    // enough. The norms' |g|^p meet this; the step coefficients (bases in (0, 1)) never do.
    if (r == r || x != x) return r;
    return general_pow(std::fabs(x), y) * (negate ? -1.0 : 1.0);
  }
  return general_pow(x, y);
}

}  // namespace genesis
