/* eval_fill.c - the element-wise and tiled fills: cast, affine, pad and
 * permute (node_ops.c defines the operations). Their compute runs on the
 * read's backend through d9_run_* (eval_backend.c).
 *
 *  - CAST, AFFINE: the input pulled in chunks through scratch, each chunk
 *    converted by one backend call (cast; affine in F32, two roundings).
 *  - PAD: the input's elements, then zero bytes.
 *  - PERMUTE: tiled on the output's two last dims (R rows, C columns per
 *    "matrix"; outer coordinates fixed): a read is cut into pieces - a
 *    partial row, whole rows, a partial row - each at most PIECE_BYTES. A
 *    piece's input elements form a box varying only in input dims perm[n-2]
 *    and perm[n-1]; it is pulled by contiguous input runs: rows of the
 *    piece when they are contiguous in the input (input stride 1 along the
 *    output's columns; the whole piece at once when its rows follow each
 *    other), columns when the output's rows have input stride 1 (into
 *    scratch, then one backend transpose into the reply), else single
 *    elements. Every input element is pulled once: bytes pulled equal bytes
 *    produced. Bytes are moved, never converted.
 */
#include <errno.h>
#include <string.h>

#include "eval_internal.h"

enum {
  CAST_CHUNK = 64 * 1024, /* cast: elements converted per scratch round */
  CHUNK = 16 * 1024,      /* affine: elements per pull */
  PIECE_BYTES = 1 << 20,  /* permute: most bytes per piece */
};

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- cast, affine, pad ---- */

int d9_fill_cast(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out) {
  const d9_node *in = x->in[0];
  size_t ies = d9_dtype_size(in->dtype), oes = d9_dtype_size(x->dtype);
  int64_t chunk = count < CAST_CHUNK ? count : CAST_CHUNK;
  size_t tmpn = (size_t)chunk * ies;
  unsigned char *o = out;
  void *tmp = d9_scratch_push(rc, tmpn);
  if (!tmp) return -ENOMEM;
  int r = 0;
  while (count > 0 && !r) {
    int64_t take = count < chunk ? count : chunk;
    if (!(r = d9_eval_fill(rc, in, start, take, tmp)))
      r = d9_run_cast(rc, o, x->dtype, tmp, in->dtype, take);
    o += (size_t)take * oes;
    start += take;
    count -= take;
  }
  d9_scratch_pop(rc, tmp, tmpn);
  return r;
}

int d9_fill_affine(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                   void *out) {
  size_t es = d9_dtype_size(x->dtype);
  int64_t chunk = min64(count, CHUNK);
  size_t tn = (size_t)chunk * es;
  unsigned char *tmp = d9_scratch_push(rc, tn), *o = out;
  if (!tmp) return -ENOMEM;
  int r = 0;
  for (int64_t at = 0; at < count && !r; at += chunk) {
    int64_t take = min64(chunk, count - at);
    if (!(r = d9_eval_fill(rc, x->in[0], start + at, take, tmp)))
      r = d9_run_affine(rc, o + (size_t)at * es, x->dtype, tmp, x->dtype, take, x->a, x->b);
  }
  d9_scratch_pop(rc, tmp, tn);
  return r;
}

int d9_fill_pad(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out) {
  const d9_node *in = x->in[0];
  size_t es = d9_dtype_size(x->dtype);
  int64_t have = start < in->numel ? min64(count, in->numel - start) : 0;
  int r = have ? d9_eval_fill(rc, in, start, have, out) : 0;
  if (!r) memset((unsigned char *)out + (size_t)have * es, 0, (size_t)(count - have) * es);
  return r;
}

/* ---- permute ---- */

/* One piece: rows x cols output elements (a single row, or whole rows),
 * input element (r, c) at p + r * sr + c * sc. */
static int permute_piece(d9_read_ctx *rc, const d9_node *in, int64_t p, int64_t rows,
                         int64_t cols, int64_t sr, int64_t sc, unsigned char *out) {
  size_t es = d9_dtype_size(in->dtype);
  int r = 0;
  if ((sc == 1 || cols == 1) && (rows == 1 || sr == cols)) /* one run */
    return d9_eval_fill(rc, in, p, rows * cols, out);
  if (sc == 1) { /* runs along the output's rows */
    for (int64_t i = 0; i < rows && !r; i++)
      r = d9_eval_fill(rc, in, p + i * sr, cols, out + (size_t)(i * cols) * es);
    return r;
  }
  if (sr == 1 && rows > 1) { /* runs along the output's columns: [cols, rows] */
    size_t n = (size_t)(rows * cols) * es;
    unsigned char *tmp = d9_scratch_push(rc, n);
    if (!tmp) return -ENOMEM;
    for (int64_t c = 0; c < cols && !r; c++)
      r = d9_eval_fill(rc, in, p + c * sc, rows, tmp + (size_t)(c * rows) * es);
    if (!r) r = d9_run_transpose(rc, out, tmp, es, 1, cols, rows);
    d9_scratch_pop(rc, tmp, n);
    return r;
  }
  for (int64_t i = 0; i < rows && !r; i++) /* no contiguity: single elements */
    for (int64_t c = 0; c < cols && !r; c++)
      r = d9_eval_fill(rc, in, p + i * sr + c * sc, 1, out + (size_t)(i * cols + c) * es);
  return r;
}

int d9_fill_permute(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                    void *out) {
  const d9_node *in = x->in[0];
  int n = x->ndim;
  if (n < 2) return d9_eval_fill(rc, in, start, count, out);
  size_t es = d9_dtype_size(x->dtype);
  int64_t istride[D9_MAX_DIMS], s[D9_MAX_DIMS];
  istride[n - 1] = 1;
  for (int k = n - 2; k >= 0; k--) istride[k] = istride[k + 1] * in->shape[k + 1];
  for (int k = 0; k < n; k++) s[k] = istride[x->perm[k]];
  int64_t R = x->shape[n - 2], C = x->shape[n - 1], cap = PIECE_BYTES / (int64_t)es;
  int64_t end = start + count;
  unsigned char *o = out;
  while (start < end) {
    int64_t outer = start / (R * C), m = start % (R * C), r0 = m / C, c0 = m % C;
    int64_t base = 0, left = end - start, rows = 1, c1;
    for (int k = n - 3; k >= 0; k--) {
      base += outer % x->shape[k] * s[k];
      outer /= x->shape[k];
    }
    if (c0 == 0 && left >= C && C <= cap) {
      rows = min64(min64(left / C, R - r0), cap / C);
      c1 = C;
    } else {
      c1 = min64(C, c0 + min64(left, cap));
    }
    int r = permute_piece(rc, in, base + r0 * s[n - 2] + c0 * s[n - 1], rows, c1 - c0,
                          s[n - 2], s[n - 1], o);
    if (r) return r;
    o += (size_t)(rows * (c1 - c0)) * es;
    start += rows * (c1 - c0);
  }
  return 0;
}
