/* cpu.h - the CPU backend's internal entry points, shared by its files. */
#ifndef D9_CPU_H
#define D9_CPU_H

#include <stdint.h>

#include "kernels/kernels.h"

/* cast.c: convert n elements (see kernels.h for the rules). 0 or -EINVAL. */
int d9_cpu_cast(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n);

#endif
