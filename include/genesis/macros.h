// Portability macros shared by every genesis header: one source compiles under gcc and nvcc.
#pragma once

#if defined(__CUDACC__)
#define GENESIS_HD __host__ __device__ __forceinline__
#else
#define GENESIS_HD inline
#endif

// Tells the compiler that the arrays of one tensor never overlap, which is what lets the CPU
// loops vectorize without runtime alias checks.
#if defined(__CUDACC__) || defined(__GNUC__) || defined(__clang__)
#define GENESIS_RESTRICT __restrict__
#else
#define GENESIS_RESTRICT
#endif
