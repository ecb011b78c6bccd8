/* fp8.cu - the CUDA backend's FP8 block members (kernels.h d9_fp8_box),
 * bit for bit kernels/cpu/fp8.c applied row by row.
 *
 *  - dequant: f32(w) * s with one mul.rn.f32 (never an FMA, never flushed),
 *    NaN made 0x7fc00000 - fp8.c's scale_run.
 *  - amax: the maximum of |x| over non-NaN elements, taken on bit patterns
 *    (non-negative floats order like their bits) with atomicMax into one
 *    partial per block per job; the host folds each partial p into the
 *    caller's entry m as fp8.c does (m = p > m ? p : m). For m >= +0, -0 or
 *    NaN on entry the result is independent of order and equals the CPU's;
 *    a negative entry (where the CPU's answer would depend on which zero it
 *    met first) is refused with -ENOTSUP before any work.
 *  - quant: div.rn.f32, the saturating narrowing of cast.c; a NaN x gives
 *    0x7f with x's sign, a NaN quotient of a non-NaN x (0/0, Inf/Inf, NaN
 *    scale) the sign the host's own division gives (probed, convert.cuh).
 * A box is cut into jobs of whole rows, or of part of one row when a row
 * exceeds a job; each job carries the window of scales (or partial maxima)
 * of the blocks it touches, packed densely.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/stage.cuh"

/* ---- box validation and tiling ---- */


/* One job: rows [r0, r0 + nr) x columns [c0, c0 + nc) of the box, dense in
 * the box's data at element r0 * n + c0 (nr = 1 or nc = n). Its blocks are
 * window rows [br0, br0 + nbr) x columns [bc0, bc0 + nbc); rr and cr are
 * the offsets of its first row / column inside their blocks. */
struct box_job {
  int64_t r0, nr, c0, nc;
  int64_t br0, nbr, bc0, nbc;
  int64_t rr, cr;
};

/* Cuts a box into jobs of at most cap elements. */
struct box_tiler {
  d9_fp8_box b;
  int64_t cap, r, c;

  bool next(box_job *j) {
    if (r >= b.rows)
      return false;
    j->r0 = r;
    if (b.n <= cap) {
      int64_t k = cap / b.n;
      j->nr = b.rows - r < k ? b.rows - r : k;
      j->c0 = 0;
      j->nc = b.n;
      r += j->nr;
    } else {
      j->nr = 1;
      j->c0 = c;
      j->nc = b.n - c < cap ? b.n - c : cap;
      c += j->nc;
      if (c == b.n) {
        c = 0;
        r++;
      }
    }
    int64_t fi = b.i0 + j->r0, fj = b.j0 + j->c0;
    j->br0 = fi / b.b0 - b.i0 / b.b0;
    j->nbr = (fi + j->nr - 1) / b.b0 - fi / b.b0 + 1;
    j->bc0 = fj / b.b1 - b.j0 / b.b1;
    j->nbc = (fj + j->nc - 1) / b.b1 - fj / b.b1 + 1;
    j->rr = fi % b.b0;
    j->cr = fj % b.b1;
    return true;
  }
};

/* The job's window of a caller array (F32 entries, row stride lds) into
 * dense [nbr, nbc] at out. */
static void pack_window(float *out, const float *win, const d9_fp8_box &b, const box_job &j) {
  for (int64_t r = 0; r < j.nbr; r++)
    memcpy(out + r * j.nbc, win + (j.br0 + r) * b.lds + j.bc0, (size_t)j.nbc * sizeof(float));
}

/* Kernel-side geometry of a job: element e of nr x nc uses window entry
 * blk(rr + e / nc, b0) * nbc + blk(cr + e % nc, b1). WIDE: 64-bit block
 * division, needed only when a block side exceeds 2^30. */
struct geo {
  uint32_t nc, nbc, total;
  uint64_t rr, cr, b0, b1;
};

template <bool WIDE> D9C_HD uint32_t win_index(const geo &g, uint32_t e) {
  uint32_t r = e / g.nc, c = e % g.nc;
  if (WIDE)
    return (uint32_t)((g.rr + r) / g.b0) * g.nbc + (uint32_t)((g.cr + c) / g.b1);
  return ((uint32_t)g.rr + r) / (uint32_t)g.b0 * g.nbc + ((uint32_t)g.cr + c) / (uint32_t)g.b1;
}

static geo make_geo(const d9_fp8_box &b, const box_job &j) {
  geo g;
  g.nc = (uint32_t)j.nc;
  g.nbc = (uint32_t)j.nbc;
  g.total = (uint32_t)(j.nr * j.nc);
  g.rr = (uint64_t)j.rr;
  g.cr = (uint64_t)j.cr;
  g.b0 = (uint64_t)b.b0;
  g.b1 = (uint64_t)b.b1;
  return g;
}

static bool geo_wide(const d9_fp8_box &b) {
  return b.b0 > (INT64_C(1) << 30) || b.b1 > (INT64_C(1) << 30);
}

/* ---- dequant ---- */

template <int WT, bool WIDE>
__global__ void d9c_dequant_kernel(uint32_t *__restrict__ dst, const uint8_t *__restrict__ w,
                                   const float *__restrict__ sc, geo g) {
  uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < g.total; e += stride)
    dst[e] = d9c_dequant(d9c_type<WT>::widen(w[e]), sc[win_index<WIDE>(g, e)]);
}

struct dequant_op {
  typedef box_job job;
  box_tiler t;
  unsigned char *dst; /* F32, any alignment */
  const uint8_t *w;
  const float *scale;
  int wt;

  bool next(job *j) { return t.next(j); }
  void pack(const job &j, d9c_lane *L) {
    memcpy(L->h_in, w + j.r0 * t.b.n + j.c0, (size_t)(j.nr * j.nc));
    pack_window((float *)L->h_aux, scale, t.b, j);
  }
  cudaError_t launch(const job &j, d9c_lane *L, const d9c_slot *s) {
    geo g = make_geo(t.b, j);
    cudaError_t e = d9c_h2d(L->d_in, L->h_in, g.total, L->stream);
    if (e == cudaSuccess)
      e = d9c_h2d(L->d_aux, L->h_aux, (size_t)(j.nbr * j.nbc) * sizeof(float), L->stream);
    if (e != cudaSuccess)
      return e;
    unsigned grid = d9c_grid(s, g.total);
    uint32_t *o = (uint32_t *)L->d_out;
    const float *sc = (const float *)L->d_aux;
    bool wide = geo_wide(t.b);
    if (wt == D9_F8_E4M3 && wide)
      d9c_dequant_kernel<D9_F8_E4M3, true><<<grid, D9C_THREADS, 0, L->stream>>>(o, L->d_in, sc, g);
    else if (wt == D9_F8_E4M3)
      d9c_dequant_kernel<D9_F8_E4M3, false><<<grid, D9C_THREADS, 0, L->stream>>>(o, L->d_in, sc, g);
    else if (wide)
      d9c_dequant_kernel<D9_F8_E5M2, true><<<grid, D9C_THREADS, 0, L->stream>>>(o, L->d_in, sc, g);
    else
      d9c_dequant_kernel<D9_F8_E5M2, false><<<grid, D9C_THREADS, 0, L->stream>>>(o, L->d_in, sc, g);
    if ((e = cudaGetLastError()) != cudaSuccess)
      return e;
    return d9c_d2h(L->h_out, L->d_out, (size_t)g.total * 4, L->stream);
  }
  void unpack(const job &j, d9c_lane *L) {
    memcpy(dst + 4 * (size_t)(j.r0 * t.b.n + j.c0), L->h_out, 4 * (size_t)(j.nr * j.nc));
  }
};

int d9c_fp8_dequant(int dev, void *dst, const uint8_t *w, int wt, const float *scale,
                    const d9_fp8_box *box) {
  int touch, r = d9_fp8_box_check(box, dst && w && scale, 4, &touch);
  if (r)
    return r;
  if (wt != D9_F8_E4M3 && wt != D9_F8_E5M2)
    return -EINVAL;
  if (!touch)
    return 0;
  dequant_op op;
  op.t.b = *box;
  op.t.cap = D9C_STAGE_BYTES / 4;
  op.t.r = op.t.c = 0;
  op.dst = (unsigned char *)dst;
  op.w = w;
  op.scale = scale;
  op.wt = wt;
  d9c_slot *s;
  if ((r = d9c_slot_acquire(dev, &s)) != 0)
    return r;
  r = d9c_run(s, op);
  d9c_slot_release(s);
  return r;
}

/* ---- amax ---- */

enum { AMAX_SPAN = 16 }; /* consecutive elements per thread between flushes */

/* One thread's work: elements [base, base + AMAX_SPAN) (clipped), one
 * running maximum per block met, flushed with atomicMax when the block
 * changes. Host-callable so the span logic can be checked without a GPU. */
template <bool WIDE>
D9C_HD void d9c_amax_span(uint32_t *part, const uint32_t *x, const geo &g, uint32_t base) {
  uint32_t end = g.total - base < AMAX_SPAN ? g.total : base + AMAX_SPAN;
  uint32_t key = win_index<WIDE>(g, base), cur = 0;
  for (uint32_t e = base; e < end; e++) {
    uint32_t k = win_index<WIDE>(g, e), v = d9c_abs_or_zero(x[e]);
    if (k != key) {
      if (cur)
        d9c_atomic_max(part + key, cur);
      key = k;
      cur = 0;
    }
    cur = v > cur ? v : cur;
  }
  if (cur)
    d9c_atomic_max(part + key, cur);
}

template <bool WIDE>
__global__ void d9c_amax_kernel(uint32_t *__restrict__ part, const uint32_t *__restrict__ x,
                                geo g) {
  uint32_t stride = gridDim.x * blockDim.x * AMAX_SPAN;
  for (uint32_t base = (blockIdx.x * blockDim.x + threadIdx.x) * AMAX_SPAN; base < g.total;
       base += stride)
    d9c_amax_span<WIDE>(part, x, g, base);
}

struct amax_op {
  typedef box_job job;
  box_tiler t;
  float *amax;
  const float *x;

  bool next(job *j) { return t.next(j); }
  void pack(const job &j, d9c_lane *L) {
    memcpy(L->h_in, x + j.r0 * t.b.n + j.c0, 4 * (size_t)(j.nr * j.nc));
  }
  cudaError_t launch(const job &j, d9c_lane *L, const d9c_slot *s) {
    geo g = make_geo(t.b, j);
    size_t pn = (size_t)(j.nbr * j.nbc) * 4;
    cudaError_t e = d9c_h2d(L->d_in, L->h_in, (size_t)g.total * 4, L->stream);
    if (e == cudaSuccess)
      e = cudaMemsetAsync(L->d_out, 0, pn, L->stream);
    if (e != cudaSuccess)
      return e;
    unsigned grid = d9c_grid(s, (g.total + AMAX_SPAN - 1) / AMAX_SPAN);
    uint32_t *p = (uint32_t *)L->d_out;
    const uint32_t *xin = (const uint32_t *)L->d_in;
    if (geo_wide(t.b))
      d9c_amax_kernel<true><<<grid, D9C_THREADS, 0, L->stream>>>(p, xin, g);
    else
      d9c_amax_kernel<false><<<grid, D9C_THREADS, 0, L->stream>>>(p, xin, g);
    if ((e = cudaGetLastError()) != cudaSuccess)
      return e;
    return d9c_d2h(L->h_out, L->d_out, pn, L->stream);
  }
  /* fp8.c's fold, m = a > m ? a : m, with the job's maximum as a */
  void unpack(const job &j, d9c_lane *L) {
    const uint32_t *p = (const uint32_t *)L->h_out;
    for (int64_t r = 0; r < j.nbr; r++)
      for (int64_t c = 0; c < j.nbc; c++) {
        float a = d9c_float(p[r * j.nbc + c]);
        float *m = amax + (j.br0 + r) * t.b.lds + j.bc0 + c;
        *m = a > *m ? a : *m;
      }
  }
};

int d9c_fp8_amax(int dev, float *amax, const float *x, const d9_fp8_box *box) {
  int touch, r = d9_fp8_box_check(box, amax && x, 4, &touch);
  if (r || !touch)
    return r;
  int64_t nrb = (box->i0 + box->rows - 1) / box->b0 - box->i0 / box->b0 + 1;
  int64_t ncb = (box->j0 + box->n - 1) / box->b1 - box->j0 / box->b1 + 1;
  for (int64_t i = 0; i < nrb; i++) /* the precondition of the fold */
    for (int64_t k = 0; k < ncb; k++)
      if (amax[i * box->lds + k] < 0.0f)
        return -ENOTSUP;
  amax_op op;
  op.t.b = *box;
  op.t.cap = D9C_STAGE_BYTES / 4;
  op.t.r = op.t.c = 0;
  op.amax = amax;
  op.x = x;
  d9c_slot *s;
  if ((r = d9c_slot_acquire(dev, &s)) != 0)
    return r;
  r = d9c_run(s, op);
  d9c_slot_release(s);
  return r;
}

/* ---- quant ---- */

template <bool WIDE>
__global__ void d9c_quant_kernel(uint8_t *__restrict__ dst, const uint32_t *__restrict__ x,
                                 const float *__restrict__ sc, geo g, d9c_nan_rules nr) {
  uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < g.total; e += stride)
    dst[e] = (uint8_t)d9c_quant_e4m3(x[e], sc[win_index<WIDE>(g, e)], nr);
}

struct quant_op {
  typedef box_job job;
  box_tiler t;
  uint8_t *dst;
  const float *x;
  const float *scale;

  bool next(job *j) { return t.next(j); }
  void pack(const job &j, d9c_lane *L) {
    memcpy(L->h_in, x + j.r0 * t.b.n + j.c0, 4 * (size_t)(j.nr * j.nc));
    pack_window((float *)L->h_aux, scale, t.b, j);
  }
  cudaError_t launch(const job &j, d9c_lane *L, const d9c_slot *s) {
    geo g = make_geo(t.b, j);
    cudaError_t e = d9c_h2d(L->d_in, L->h_in, (size_t)g.total * 4, L->stream);
    if (e == cudaSuccess)
      e = d9c_h2d(L->d_aux, L->h_aux, (size_t)(j.nbr * j.nbc) * sizeof(float), L->stream);
    if (e != cudaSuccess)
      return e;
    unsigned grid = d9c_grid(s, g.total);
    const uint32_t *xin = (const uint32_t *)L->d_in;
    const float *sc = (const float *)L->d_aux;
    if (geo_wide(t.b))
      d9c_quant_kernel<true><<<grid, D9C_THREADS, 0, L->stream>>>(L->d_out, xin, sc, g, s->nr);
    else
      d9c_quant_kernel<false><<<grid, D9C_THREADS, 0, L->stream>>>(L->d_out, xin, sc, g, s->nr);
    if ((e = cudaGetLastError()) != cudaSuccess)
      return e;
    return d9c_d2h(L->h_out, L->d_out, g.total, L->stream);
  }
  void unpack(const job &j, d9c_lane *L) {
    memcpy(dst + j.r0 * t.b.n + j.c0, L->h_out, (size_t)(j.nr * j.nc));
  }
};

int d9c_fp8_quant(int dev, uint8_t *dst, const float *x, const float *scale,
                  const d9_fp8_box *box) {
  int touch, r = d9_fp8_box_check(box, dst && x && scale, 4, &touch);
  if (r || !touch)
    return r;
  quant_op op;
  op.t.b = *box;
  op.t.cap = D9C_STAGE_BYTES / 4;
  op.t.r = op.t.c = 0;
  op.dst = dst;
  op.x = x;
  op.scale = scale;
  d9c_slot *s;
  if ((r = d9c_slot_acquire(dev, &s)) != 0)
    return r;
  r = d9c_run(s, op);
  d9c_slot_release(s);
  return r;
}
