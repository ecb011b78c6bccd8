#include "dtype.h"
#include "kernels.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

static const char *const dtype_names[] = {
#define D9_X(e, name, size) name,
    D9_DTYPE_TABLE(D9_X)
#undef D9_X
};

static const size_t dtype_sizes[] = {
#define D9_X(e, name, size) size,
    D9_DTYPE_TABLE(D9_X)
#undef D9_X
};

const char *d9_dtype_name(d9_dtype t) {
  return (t >= 0 && t < D9_DTYPE_COUNT) ? dtype_names[t] : "?";
}

size_t d9_dtype_size(d9_dtype t) {
  return (t >= 0 && t < D9_DTYPE_COUNT) ? dtype_sizes[t] : 0;
}

d9_dtype d9_dtype_parse(const char *name, size_t len) {
  for (int i = 0; i < D9_DTYPE_COUNT; i++)
    if (strlen(dtype_names[i]) == len && memcmp(dtype_names[i], name, len) == 0)
      return (d9_dtype)i;
  return D9_DTYPE_INVALID;
}

int d9_cast_prologue(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n) {
  size_t ssize = d9_dtype_size(st), dsize = d9_dtype_size(dt);
  if (n < 0 || ssize == 0 || dsize == 0)
    return -EINVAL;
  if (st != dt && !(d9_dtype_is_castable(st) && d9_dtype_is_castable(dt)))
    return -EINVAL;
  if (n == 0)
    return 1;
  if (dst == NULL || src == NULL)
    return -EINVAL;
  if ((uint64_t)n > SIZE_MAX / ssize || (uint64_t)n > SIZE_MAX / dsize)
    return -EOVERFLOW;
  if (st == dt) {
    memcpy(dst, src, (size_t)n * ssize);
    return 1;
  }
  return 0;
}

int d9_dtype_is_castable(d9_dtype t) {
  return t == D9_F32 || t == D9_F16 || t == D9_BF16 || t == D9_F8_E4M3 ||
         t == D9_F8_E5M2;
}

/* Checks box as kernels.h says; *touch = 1 when it has elements. Returns
 * 0, -EINVAL or -EOVERFLOW; shared by the CPU (fp8.c) and CUDA (fp8.cu) members.
 * ptrs_ok: every pointer the member needs is set; es_max: the largest
 * element size of the member's arrays (bytes). */
int d9_fp8_box_check(const d9_fp8_box *b, int ptrs_ok, size_t es_max, int *touch) {
  *touch = 0;
  if (b == NULL || b->rows < 0 || b->n < 0 || b->i0 < 0 || b->j0 < 0 || b->b0 <= 0 ||
      b->b1 <= 0)
    return -EINVAL;
  if (b->rows == 0 || b->n == 0)
    return 0;
  if (!ptrs_ok)
    return -EINVAL;
  if (b->rows > INT64_MAX - b->i0 || b->n > INT64_MAX - b->j0)
    return -EOVERFLOW;
  int64_t ncb = (b->j0 + b->n - 1) / b->b1 - b->j0 / b->b1 + 1;
  int64_t nrb = (b->i0 + b->rows - 1) / b->b0 - b->i0 / b->b0 + 1;
  if (b->lds < ncb)
    return -EINVAL;
  if (b->rows > INT64_MAX / b->n || (uint64_t)(b->rows * b->n) > SIZE_MAX / es_max ||
      nrb - 1 > (INT64_MAX - ncb) / b->lds)
    return -EOVERFLOW;
  *touch = 1;
  return 0;
}
