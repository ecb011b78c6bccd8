/* node_ops.c - the non-layout operations: permute, FP8 block dequant and
 * quant, affine, pad. Constructors check shapes and dtypes; fill functions
 * produce elements [start, start+count) (row-major, the node's dtype) and
 * pull from their inputs only the ranges those elements need.
 *
 * Exact semantics (tests compare bytes):
 *  - PERMUTE x by perm (a permutation of 0..n-1): out->shape[k] =
 *    x->shape[perm[k]], out[i_0..i_{n-1}] = x[j] with j[perm[k]] = i_k.
 *    Bytes are copied, never converted. 0-D and 1-D permutes are identity.
 *    Evaluation is tiled on the output's two last dims (R rows, C columns
 *    per "matrix"; outer coordinates fixed): a read is cut into pieces - a
 *    partial row, whole rows, a partial row - each at most PIECE_BYTES. A
 *    piece's input elements form a box varying only in input dims perm[n-2]
 *    and perm[n-1]; it is pulled by contiguous input runs: rows of the
 *    piece when they are contiguous in the input (input stride 1 along the
 *    output's columns; the whole piece at once when its rows follow each
 *    other), columns when the output's rows have input stride 1 (into
 *    scratch, then scattered), else single elements. Every input element
 *    is pulled once: bytes pulled equal bytes produced.
 *  - DEQUANT w F8_E4M3/F8_E5M2 [M, N], s F32/BF16 [ceil(M/b0), ceil(N/b1)]
 *    (exactly): out F32 [M, N], out[i,j] = f32(w[i,j]) * f32(s[i/b0, j/b1])
 *    as one F32 multiply; a NaN product is +0x7fc00000 (fp8.c). Inf and
 *    subnormal weights are exact inputs to the multiply (Inf * 0 is NaN).
 *    A read pulls its weight elements once and, per block row it touches,
 *    each needed scale element once.
 *  - QUANT x F32/F16/BF16 [M, N], blocks b0 x b1 (edges ragged): amax =
 *    max |f32(x)| over the block, NaN ignored (an all-NaN block has amax 0),
 *    Inf counted; scale = amax / 448 (F32), 1 when amax is 0 or not finite
 *    (or below 7 * 2^-144, where the quotient is 0); QUANT_S [ceil(M/b0),
 *    ceil(N/b1)] F32 holds the scales (the "scale_inv" that DEQUANT
 *    multiplies by); QUANT_W F8_E4M3 [M, N] = e4m3(f32(x) / scale), one F32
 *    division, then the saturating RNE narrowing (|q| <= 448; a block with
 *    an Inf has scale 1, so its finite values saturate and Inf becomes NaN;
 *    a NaN x gives 0x7f with its sign). Round trip: for a block with normal
 *    scale s, |f32(e4m3) * s - x| <= 2^-4 |x| + 2^-10 s + 2^-22 (|x| + s)
 *    (derived in tests/test_ops.c). A weight read computes the scales of
 *    the blocks it touches from their whole b0-row tiles (held in scratch
 *    when b0 x b1 elements fit TILE_ELEMS, else read twice, streamed).
 *  - AFFINE: cast_{x->dtype}(f32(x) * a + b), two F32 roundings (backend.c;
 *    NaN results canonical). w + 1 / w - 1 for zero-centred RMSNorm.
 *  - PAD: dim 0 grown to rows; elements past x's are zero bytes.
 * Fills allocate only scratch (d9_scratch_push: the piece or fixed chunks),
 * return 0 or -errno (-ENOMEM when scratch fails) and touch nothing global.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "eval.h"
#include "node.h"

enum {
  PIECE_BYTES = 1 << 20, /* permute: most bytes per piece */
  CHUNK = 16 * 1024,     /* dequant / quant / affine: elements per pull */
  SWIN = 1024,           /* dequant / quant: most scale blocks per window */
  TILE_ELEMS = 1 << 18,  /* quant: most F32 elements kept per tile */
};

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }
/* First index of block k of size b, clipped to lim (no overflow for any b). */
static inline int64_t upto(int64_t k, int64_t b, int64_t lim) {
  return k >= cdiv(lim, b) ? lim : k * b;
}

static d9_node *new_op(d9_arena *a, d9_op op, int nin, const d9_node *like) {
  d9_node *n = d9_arena_alloc(a, sizeof *n);
  if (!n || !(n->in = d9_arena_calloc(a, (size_t)nin, sizeof *n->in))) return NULL;
  n->op = op;
  n->nin = nin;
  n->dtype = like->dtype;
  n->ndim = like->ndim;
  memcpy(n->shape, like->shape, sizeof n->shape);
  n->numel = like->numel;
  return n;
}

/* ---- constructors ---- */

d9_node *d9_node_permute(d9_arena *a, d9_node *x, const int *perm, int ndim,
                         const char *where, d9_diag *diag) {
  char b1[160], pb[160];
  size_t o = 0;
  pb[0] = 0;
  for (int k = 0; k < ndim && k < D9_MAX_DIMS && o < sizeof pb; k++)
    o += (size_t)snprintf(pb + o, sizeof pb - o, "%s%d", k ? ", " : "", perm[k]);
  if (ndim != x->ndim)
    return d9_diag_fail(diag, EINVAL, "%s: permutation (%s) has %d dims, tensor %s has %d",
                        where, pb, ndim, d9_shape_str(x->shape, x->ndim, b1, sizeof b1),
                        x->ndim), NULL;
  unsigned seen = 0;
  for (int k = 0; k < ndim; k++) {
    if (perm[k] < 0 || perm[k] >= ndim || (seen >> perm[k] & 1u))
      return d9_diag_fail(diag, EINVAL, "%s: (%s) is not a permutation of the dims of %s",
                          where, pb, d9_shape_str(x->shape, x->ndim, b1, sizeof b1)), NULL;
    seen |= 1u << perm[k];
  }
  d9_node *n = new_op(a, D9_OP_PERMUTE, 1, x);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  for (int k = 0; k < ndim; k++) {
    n->perm[k] = perm[k];
    n->shape[k] = x->shape[perm[k]];
  }
  return n;
}

static int check_blocks(int64_t b0, int64_t b1, const char *where, d9_diag *diag) {
  if (b0 <= 0 || b1 <= 0)
    return d9_diag_fail(diag, EINVAL, "%s: block size %lldx%lld must be positive", where,
                        (long long)b0, (long long)b1);
  return 0;
}

d9_node *d9_node_dequant(d9_arena *a, d9_node *w, d9_node *s, int64_t b0, int64_t b1,
                         const char *where, d9_diag *diag) {
  char t1[160], t2[160], t3[160];
  if (check_blocks(b0, b1, where, diag)) return NULL;
  if (w->ndim != 2 || (w->dtype != D9_F8_E4M3 && w->dtype != D9_F8_E5M2))
    return d9_diag_fail(diag, EINVAL, "%s: dequant weight is %s %s, want F8_E4M3 or F8_E5M2 "
                        "[M, N]", where, d9_dtype_name(w->dtype),
                        d9_shape_str(w->shape, w->ndim, t1, sizeof t1)), NULL;
  int64_t want[2] = {cdiv(w->shape[0], b0), cdiv(w->shape[1], b1)};
  if (s->dtype != D9_F32 && s->dtype != D9_BF16)
    return d9_diag_fail(diag, EINVAL, "%s: dequant scale is %s, want F32 or BF16", where,
                        d9_dtype_name(s->dtype)), NULL;
  if (s->ndim != 2 || s->shape[0] != want[0] || s->shape[1] != want[1])
    return d9_diag_fail(diag, EINVAL, "%s: dequant scale is %s, want %s for weight %s in "
                        "blocks of %lldx%lld", where,
                        d9_shape_str(s->shape, s->ndim, t1, sizeof t1),
                        d9_shape_str(want, 2, t2, sizeof t2),
                        d9_shape_str(w->shape, 2, t3, sizeof t3), (long long)b0,
                        (long long)b1), NULL;
  d9_node *n = new_op(a, D9_OP_DEQUANT, 2, w);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = w;
  n->in[1] = s;
  n->dtype = D9_F32;
  n->block[0] = b0;
  n->block[1] = b1;
  return n;
}

int d9_node_quant(d9_arena *a, d9_node *x, int64_t b0, int64_t b1, d9_node *out[2],
                  const char *where, d9_diag *diag) {
  char t1[160];
  if (check_blocks(b0, b1, where, diag)) return -EINVAL;
  if (x->ndim != 2 || (x->dtype != D9_F32 && x->dtype != D9_F16 && x->dtype != D9_BF16))
    return d9_diag_fail(diag, EINVAL, "%s: quantised tensor is %s %s, want F32, F16 or BF16 "
                        "[M, N]", where, d9_dtype_name(x->dtype),
                        d9_shape_str(x->shape, x->ndim, t1, sizeof t1));
  d9_node *w = new_op(a, D9_OP_QUANT_W, 1, x), *s = new_op(a, D9_OP_QUANT_S, 1, x);
  if (!w || !s) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where);
  w->dtype = D9_F8_E4M3;
  s->dtype = D9_F32;
  s->shape[0] = cdiv(x->shape[0], b0);
  s->shape[1] = cdiv(x->shape[1], b1);
  s->numel = s->shape[0] * s->shape[1]; /* <= x->numel */
  for (int i = 0; i < 2; i++) {
    d9_node *n = i ? s : w;
    n->in[0] = x;
    n->block[0] = b0;
    n->block[1] = b1;
    out[i] = n;
  }
  return 0;
}

d9_node *d9_node_affine(d9_arena *a, d9_node *x, float mul, float add, const char *where,
                        d9_diag *diag) {
  if (!d9_dtype_is_castable(x->dtype))
    return d9_diag_fail(diag, EINVAL, "%s: affine needs a float tensor, not %s", where,
                        d9_dtype_name(x->dtype)), NULL;
  d9_node *n = new_op(a, D9_OP_AFFINE, 1, x);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  n->a = mul;
  n->b = add;
  return n;
}

d9_node *d9_node_pad(d9_arena *a, d9_node *x, int64_t rows, const char *where,
                     d9_diag *diag) {
  char t1[160];
  if (x->ndim < 1 || rows < x->shape[0])
    return d9_diag_fail(diag, EINVAL, "%s: cannot pad %s to %lld rows", where,
                        d9_shape_str(x->shape, x->ndim, t1, sizeof t1), (long long)rows), NULL;
  d9_node *n = new_op(a, D9_OP_PAD, 1, x);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  n->shape[0] = rows;
  uint64_t bytes;
  if (d9_st_numel(n->shape, n->ndim, &n->numel) ||
      d9_st_nbytes(n->shape, n->ndim, n->dtype, &bytes))
    return d9_diag_fail(diag, EOVERFLOW, "%s: padding to %lld rows overflows", where,
                        (long long)rows), NULL;
  return n;
}

/* ---- permute ---- */

/* dst[r * cols + c] = src[c * rows + r], elements of es bytes. */
static void transpose_copy(unsigned char *dst, const unsigned char *src, int64_t rows,
                           int64_t cols, size_t es) {
  for (int64_t r = 0; r < rows; r++) {
    unsigned char *d = dst + (size_t)(r * cols) * es;
    const unsigned char *s = src + (size_t)r * es;
    size_t step = (size_t)rows * es;
    switch (es) {
      case 1: for (int64_t c = 0; c < cols; c++) d[c] = s[(size_t)c * step]; break;
      case 2: for (int64_t c = 0; c < cols; c++) memcpy(d + 2 * c, s + c * step, 2); break;
      case 4: for (int64_t c = 0; c < cols; c++) memcpy(d + 4 * c, s + c * step, 4); break;
      default: for (int64_t c = 0; c < cols; c++) memcpy(d + c * es, s + c * step, es);
    }
  }
}

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
  if (sr == 1 && rows > 1) { /* runs along the output's columns */
    size_t n = (size_t)(rows * cols) * es;
    unsigned char *tmp = d9_scratch_push(rc, n);
    if (!tmp) return -ENOMEM;
    for (int64_t c = 0; c < cols && !r; c++)
      r = d9_eval_fill(rc, in, p + c * sc, rows, tmp + (size_t)(c * rows) * es);
    if (!r) transpose_copy(out, tmp, rows, cols, es);
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

/* ---- shared by dequant and quant ---- */

/* A run of the request inside one block row: rows i..il, the first from
 * column c0, the last up to column cl (exclusive); its scale blocks
 * [k0, k1). Two partial rows whose blocks do not meet are cut into two
 * groups, so only needed blocks are touched. Returns the flat end. */
typedef struct group {
  int64_t i, c0, il, cl, k0, k1;
} group;

static int64_t next_group(const d9_node *x, int64_t start, int64_t end, group *g) {
  int64_t M = x->shape[0], N = x->shape[1], b0 = x->block[0], b1 = x->block[1];
  int64_t nb = cdiv(N, b1);
  g->i = start / N;
  g->c0 = start % N;
  int64_t gend = min64(end, upto(g->i / b0 + 1, b0, M) * N);
  g->il = (gend - 1) / N;
  g->cl = (gend - 1) % N + 1;
  if (g->il == g->i) {
    g->k0 = g->c0 / b1;
    g->k1 = (g->cl - 1) / b1 + 1;
  } else if (g->il == g->i + 1 && (g->cl - 1) / b1 + 1 < g->c0 / b1) {
    g->il = g->i;
    g->cl = N;
    gend = (g->i + 1) * N;
    g->k0 = g->c0 / b1;
    g->k1 = nb;
  } else {
    g->k0 = 0;
    g->k1 = nb;
  }
  return gend;
}

/* Columns [*a, *z) of row r of group g that lie inside [w0, w1). */
static void row_cols(const group *g, int64_t N, int64_t r, int64_t w0, int64_t w1,
                     int64_t *a, int64_t *z) {
  int64_t lo = r == g->i ? g->c0 : 0, hi = r == g->il ? g->cl : N;
  *a = lo > w0 ? lo : w0;
  *z = hi < w1 ? hi : w1;
}

/* Elements [at, at+n) of x (n <= CHUNK) as F32 into dst; raw holds CHUNK
 * elements of x's dtype (unused for F32). */
static int pull_f32(d9_read_ctx *rc, const d9_node *x, int64_t at, int64_t n, float *dst,
                    void *raw) {
  if (x->dtype == D9_F32) return d9_eval_fill(rc, x, at, n, dst);
  int r = d9_eval_fill(rc, x, at, n, raw);
  return r ? r : d9_backend_cpu()->cast(dst, D9_F32, raw, x->dtype, n);
}

/* ---- dequant ---- */

int d9_fill_dequant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                    void *out) {
  const d9_node *w = x->in[0], *s = x->in[1];
  int64_t N = x->shape[1], b0 = x->block[0], b1 = x->block[1], nb = s->shape[1];
  int64_t end = start + count, first = start;
  size_t ses = d9_dtype_size(s->dtype), wn = CHUNK, sn = SWIN * sizeof(float);
  size_t rn = s->dtype == D9_F32 ? 0 : SWIN * ses;
  unsigned char *o = out; /* F32, any alignment */
  int r = -ENOMEM;
  uint8_t *wbuf = d9_scratch_push(rc, wn);
  if (!wbuf) goto out;
  float *sc = d9_scratch_push(rc, sn);
  if (!sc) goto pop_w;
  void *sraw = rn ? d9_scratch_push(rc, rn) : NULL;
  if (rn && !sraw) goto pop_s;
  r = 0;
  while (start < end && !r) {
    group g;
    int64_t gend = next_group(x, start, end, &g);
    for (int64_t ka = g.k0; ka < g.k1 && !r; ka += SWIN) {
      int64_t kb = min64(g.k1, ka + SWIN), w0 = ka * b1, w1 = upto(kb, b1, N);
      r = pull_f32(rc, s, g.i / b0 * nb + ka, kb - ka, sc, sraw);
      for (int64_t i = g.i; i <= g.il && !r; i++) {
        int64_t a, z;
        row_cols(&g, N, i, w0, w1, &a, &z);
        for (; a < z && !r; a += CHUNK) {
          int64_t take = min64(CHUNK, z - a);
          if (!(r = d9_eval_fill(rc, w, i * N + a, take, wbuf)))
            r = d9_cpu_fp8_dequant(o + 4 * (i * N + a - first), wbuf, w->dtype,
                                   sc + (a / b1 - ka), a, take, b1);
        }
      }
    }
    start = gend;
  }
  if (rn) d9_scratch_pop(rc, sraw, rn);
pop_s:
  d9_scratch_pop(rc, sc, sn);
pop_w:
  d9_scratch_pop(rc, wbuf, wn);
out:
  return r;
}

/* ---- quant ---- */

typedef struct qbufs {
  void *raw;    /* CHUNK elements of x's dtype (NULL for F32) */
  float *f;     /* CHUNK F32 */
  float *tile;  /* tcap F32 (<= TILE_ELEMS), or NULL: stream */
  int64_t tcap;
} qbufs;

/* amax[k - k0] for blocks [k0, k1) of block row B, accumulated over the
 * block's rows (amax zeroed by the caller). With tile set, also keeps the
 * rows as F32: tile[(r - B*b0) * width + (c - k0*b1)]. */
static int block_amax(d9_read_ctx *rc, const d9_node *q, int64_t B, int64_t k0, int64_t k1,
                      float *amax, qbufs *qb) {
  const d9_node *x = q->in[0];
  int64_t M = x->shape[0], N = x->shape[1], b0 = q->block[0], b1 = q->block[1];
  int64_t w0 = k0 * b1, w1 = upto(k1, b1, N), width = w1 - w0, iend = upto(B + 1, b0, M);
  int r = 0;
  for (int64_t i = B * b0; i < iend && !r; i++)
    for (int64_t a = w0; a < w1 && !r; a += CHUNK) {
      int64_t take = min64(CHUNK, w1 - a);
      float *dst = qb->tile ? qb->tile + (i - B * b0) * width + (a - w0) : qb->f;
      if (!(r = pull_f32(rc, x, i * N + a, take, dst, qb->raw)))
        r = d9_cpu_fp8_amax(amax + (a / b1 - k0), dst, a, take, b1);
    }
  return r;
}

/* Scales in windows of at most SWIN blocks through sc, then into out (any
 * alignment). */
static int fill_quant_s(d9_read_ctx *rc, const d9_node *q, int64_t start, int64_t count,
                        unsigned char *out, qbufs *qb, float *sc) {
  int64_t nb = q->shape[1], end = start + count;
  int r = 0;
  for (int64_t at = start; at < end && !r;) {
    int64_t B = at / nb, k0 = at % nb, k1 = min64(min64(nb, k0 + (end - at)), k0 + SWIN);
    for (int64_t k = 0; k < k1 - k0; k++) sc[k] = 0.0f;
    r = block_amax(rc, q, B, k0, k1, sc, qb);
    for (int64_t k = 0; k < k1 - k0; k++) sc[k] = d9_cpu_fp8_scale(sc[k]);
    memcpy(out + 4 * (at - start), sc, (size_t)(k1 - k0) * sizeof *sc);
    at += k1 - k0;
  }
  return r;
}

static int fill_quant_w(d9_read_ctx *rc, const d9_node *q, int64_t start, int64_t count,
                        uint8_t *out, qbufs *qb, float *sc) {
  const d9_node *x = q->in[0];
  int64_t M = x->shape[0], N = x->shape[1], b0 = q->block[0], b1 = q->block[1];
  int64_t end = start + count, first = start;
  int r = 0;
  while (start < end && !r) {
    group g;
    int64_t gend = next_group(q, start, end, &g), B = g.i / b0;
    int64_t rows = upto(B + 1, b0, M) - B * b0;
    /* tile mode: as many blocks as fit TILE_ELEMS; else stream 1 window */
    int64_t per = qb->tile ? qb->tcap / (rows * b1) : SWIN;
    for (int64_t ka = g.k0; ka < g.k1 && !r;) {
      int64_t kb = min64(g.k1, ka + min64(per, SWIN)), w0 = ka * b1, w1 = upto(kb, b1, N);
      for (int64_t k = 0; k < kb - ka; k++) sc[k] = 0.0f;
      r = block_amax(rc, q, B, ka, kb, sc, qb);
      for (int64_t k = 0; k < kb - ka; k++) sc[k] = d9_cpu_fp8_scale(sc[k]);
      for (int64_t i = g.i; i <= g.il && !r; i++) {
        int64_t a, z;
        row_cols(&g, N, i, w0, w1, &a, &z);
        for (; a < z && !r; a += CHUNK) {
          int64_t take = min64(CHUNK, z - a);
          const float *src = qb->tile ? qb->tile + (i - B * b0) * (w1 - w0) + (a - w0) : qb->f;
          if (!qb->tile) r = pull_f32(rc, x, i * N + a, take, qb->f, qb->raw);
          if (!r) r = d9_cpu_fp8_quant(out + (i * N + a - first), src, sc + (a / b1 - ka), a,
                                       take, b1);
        }
      }
      ka = kb;
    }
    start = gend;
  }
  return r;
}

int d9_fill_quant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                  void *out) {
  const d9_node *in = x->in[0];
  int64_t rows = min64(x->block[0], in->shape[0]), nb = cdiv(in->shape[1], x->block[1]);
  qbufs qb = {0};
  /* the tile holds whole block rows of at least one block column, and of
   * no more block columns than the tensor has */
  if (x->op == D9_OP_QUANT_W && rows <= TILE_ELEMS / x->block[1]) {
    int64_t col = rows * x->block[1];
    qb.tcap = nb <= TILE_ELEMS / col ? nb * col : TILE_ELEMS;
  }
  size_t rn = in->dtype == D9_F32 ? 0 : CHUNK * d9_dtype_size(in->dtype);
  size_t fn = CHUNK * sizeof(float), tn = (size_t)qb.tcap * sizeof(float);
  size_t sn = SWIN * sizeof(float);
  int r = -ENOMEM;
  if (rn && !(qb.raw = d9_scratch_push(rc, rn))) goto out;
  if (!(qb.f = d9_scratch_push(rc, fn))) goto pop_raw;
  if (tn && !(qb.tile = d9_scratch_push(rc, tn))) goto pop_f;
  float *sc = d9_scratch_push(rc, sn);
  if (!sc) goto pop_tile;
  if (x->op == D9_OP_QUANT_S)
    r = fill_quant_s(rc, x, start, count, out, &qb, sc);
  else
    r = fill_quant_w(rc, x, start, count, out, &qb, sc);
  d9_scratch_pop(rc, sc, sn);
pop_tile:
  if (tn) d9_scratch_pop(rc, qb.tile, tn);
pop_f:
  d9_scratch_pop(rc, qb.f, fn);
pop_raw:
  if (rn) d9_scratch_pop(rc, qb.raw, rn);
out:
  return r;
}

/* ---- affine, pad ---- */

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
      r = d9_backend_cpu()->affine(o + (size_t)at * es, x->dtype, tmp, x->dtype, take, x->a,
                                   x->b);
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
