/* transpose.c - the CPU backend's transpose member (kernels.h): src
 * [batch, rows, cols] -> dst [batch, cols, rows], elements of es bytes
 * copied bit for bit. Each destination row is written in order while the
 * source is read with a stride of cols elements; 1-, 2- and 4-byte
 * elements have their own loops (fixed-size copies the compiler turns into
 * plain loads and stores), any other size is copied with memcpy.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"

/* One matrix: d[c * rows + r] = s[r * cols + c]. */
static void transpose_one(unsigned char *restrict d, const unsigned char *restrict s,
                          size_t es, int64_t rows, int64_t cols) {
  size_t step = (size_t)cols * es; /* bytes between source rows */
  for (int64_t c = 0; c < cols; c++) {
    unsigned char *o = d + (size_t)(c * rows) * es;
    const unsigned char *p = s + (size_t)c * es;
    switch (es) {
      case 1: for (int64_t r = 0; r < rows; r++) o[r] = p[(size_t)r * step]; break;
      case 2: for (int64_t r = 0; r < rows; r++) memcpy(o + 2 * r, p + (size_t)r * step, 2); break;
      case 4: for (int64_t r = 0; r < rows; r++) memcpy(o + 4 * r, p + (size_t)r * step, 4); break;
      default: for (int64_t r = 0; r < rows; r++) memcpy(o + (size_t)r * es, p + (size_t)r * step, es);
    }
  }
}

/* Returns 0; -EINVAL for a negative count, es == 0 or a NULL pointer with
 * elements to move; -EOVERFLOW when the byte count does not fit a size_t.
 * Every element size is supported. */
int d9_cpu_transpose(void *dst, const void *src, size_t es, int64_t batch, int64_t rows,
                     int64_t cols) {
  if (batch < 0 || rows < 0 || cols < 0)
    return -EINVAL;
  if (batch == 0 || rows == 0 || cols == 0)
    return 0;
  if (dst == NULL || src == NULL || es == 0)
    return -EINVAL;
  if (rows > INT64_MAX / cols || batch > INT64_MAX / (rows * cols) ||
      (uint64_t)(batch * rows * cols) > SIZE_MAX / es)
    return -EOVERFLOW;
  size_t mat = (size_t)(rows * cols) * es;
  for (int64_t b = 0; b < batch; b++)
    transpose_one((unsigned char *)dst + (size_t)b * mat, (const unsigned char *)src + (size_t)b * mat,
                  es, rows, cols);
  return 0;
}
