/* cpu.h - the CPU backend's internal entry points, shared by its files. */
#ifndef D9_CPU_H
#define D9_CPU_H

#include <stdint.h>

#include "kernels/kernels.h"

/* The array loops of the CPU kernels are compiled three times on x86-64 -
 * AVX-512 (x86-64-v4), AVX2 and the baseline - and the loader picks the one
 * this CPU runs (gcc/clang target_clones, an ifunc). The formulas are
 * integer and branch-free, so every path gives the same bits: test_kernels
 * checks the loop this CPU picks against scalar references, and
 * test_kernels_base and test_kernels_avx2 the baseline and AVX2 loops
 * (CMakeLists.txt). -DD9_NO_CLONES turns it off; TSan builds go without. */
#if defined(__GNUC__)
#define D9_INLINE inline __attribute__((always_inline))
#else
#define D9_INLINE inline
#endif
/* TSan cannot run an ifunc resolver (it runs before the sanitizer is up) */
#if defined(__SANITIZE_THREAD__)
#define D9_NO_CLONES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define D9_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(D9_NO_CLONES)
#define D9_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define D9_CLONES
#endif

/* cast.c: convert n elements (see kernels.h for the rules). 0 or -EINVAL. */
int d9_cpu_cast(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n);

/* fp8.c: the backend's box members (kernels.h d9_backend.fp8_*), the
 * d9_cpu_fp8_* row functions applied row by row. */
int d9_cpu_fp8_dequant_box(void *dst, const uint8_t *w, d9_dtype wt, const float *scale,
                           const d9_fp8_box *box);
int d9_cpu_fp8_amax_box(float *amax, const float *x, const d9_fp8_box *box);
int d9_cpu_fp8_quant_box(uint8_t *dst, const float *x, const float *scale,
                         const d9_fp8_box *box);

/* transpose.c: the backend's transpose member (kernels.h); any element
 * size. */
int d9_cpu_transpose(void *dst, const void *src, size_t es, int64_t batch, int64_t rows,
                     int64_t cols);

#endif
