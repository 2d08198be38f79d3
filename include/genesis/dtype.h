// Runtime dtypes, their storage types, and the one dispatcher that maps a dtype to a type.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "genesis/macros.h"

namespace genesis {

enum class DType : int8_t { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
  }
  return "unknown";
}

inline std::size_t dtype_size(DType d) { return d == DType::Float64 ? 8 : d == DType::Float32 ? 4 : 2; }

// The register type a storage type computes in. Only float and double are dispatched today;
// 16-bit storage types will map to float here, with their own load/store overloads.
template <typename S> struct MathTypeOf { using type = S; };
template <typename S> using MathType = typename MathTypeOf<S>::type;

// Widening load and rounding store: the only place a storage type meets a math type.
template <typename M, typename S> GENESIS_HD M load(S x) { return static_cast<M>(x); }
template <typename S, typename M> GENESIS_HD void store(S& dst, M v) { dst = static_cast<S>(v); }

// Maps a runtime dtype to its storage type and calls fn(tag) with a value of that type, so one
// template instantiates per dtype instead of one hand-written copy per dtype. `op` names the
// operation in the error for a dtype it does not support.
template <typename Fn>
decltype(auto) dispatch_float_dtype(DType d, const char* op, Fn&& fn) {
  switch (d) {
    case DType::Float32: return fn(float{});
    case DType::Float64: return fn(double{});
    default: break;
  }
  throw std::invalid_argument(std::string(op) + ": unsupported dtype " + dtype_name(d));
}

}  // namespace genesis
