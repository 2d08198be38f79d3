// <immintrin.h> for the hand-vectorized CPU code. GCC 12 (before 12.3) warns that the
// "undefined" vectors its AVX-512 intrinsics start from are used uninitialized once they are
// inlined (GCC bug 105593); the warning is about the compiler's own header, so it is silenced
// for that header's lines only, not for genesis's code.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
