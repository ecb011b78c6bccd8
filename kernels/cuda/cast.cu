/* cast.cu - the CUDA backend's cast and affine (kernels.h), bit for bit
 * those of kernels/cpu/cast.c and backend.c.
 *
 * Every element is widened to F32 bits, optionally put through the affine
 * step (x * a, then + b, two roundings, NaN made 0x7fc00000), and narrowed,
 * with the mirrored scalar functions of convert.cuh. The CPU's fused loops
 * for some pairs compute the same composition. A pair with st == dt is a
 * host memcpy, as on the CPU; the GPU sees no work.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/stage.cuh"

/* the template parameters of convert.cuh are dtype.h's values */
static_assert(D9_F8_E4M3 == 3 && D9_F8_E5M2 == 4, "dtype numbering");
static_assert(D9_F16 == 7 && D9_BF16 == 8 && D9_F32 == 11, "dtype numbering");

template <int ST, int DT, bool AFF>
__global__ void d9c_cast_kernel(typename d9c_type<DT>::T *__restrict__ dst,
                                const typename d9c_type<ST>::T *__restrict__ src, int64_t n,
                                float a, float b) {
  int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint32_t w = d9c_type<ST>::widen(src[i]);
    if (AFF)
      w = d9c_affine(w, a, b);
    dst[i] = d9c_type<DT>::narrow(w);
  }
}

template <int ST, int DT, bool AFF>
static cudaError_t launch3(void *dst, const void *src, int64_t n, float a, float b,
                           unsigned grid, cudaStream_t st) {
  d9c_cast_kernel<ST, DT, AFF><<<grid, D9C_THREADS, 0, st>>>(
      (typename d9c_type<DT>::T *)dst, (const typename d9c_type<ST>::T *)src, n, a, b);
  return cudaGetLastError();
}

template <int ST, bool AFF>
static cudaError_t launch2(int dt, void *dst, const void *src, int64_t n, float a, float b,
                           unsigned grid, cudaStream_t st) {
  switch (dt) {
  case D9_F8_E4M3: return launch3<ST, D9_F8_E4M3, AFF>(dst, src, n, a, b, grid, st);
  case D9_F8_E5M2: return launch3<ST, D9_F8_E5M2, AFF>(dst, src, n, a, b, grid, st);
  case D9_F16: return launch3<ST, D9_F16, AFF>(dst, src, n, a, b, grid, st);
  case D9_BF16: return launch3<ST, D9_BF16, AFF>(dst, src, n, a, b, grid, st);
  case D9_F32: return launch3<ST, D9_F32, AFF>(dst, src, n, a, b, grid, st);
  default: return cudaErrorInvalidValue;
  }
}

template <bool AFF>
static cudaError_t launch1(int st, int dt, void *dst, const void *src, int64_t n, float a,
                           float b, unsigned grid, cudaStream_t s) {
  switch (st) {
  case D9_F8_E4M3: return launch2<D9_F8_E4M3, AFF>(dt, dst, src, n, a, b, grid, s);
  case D9_F8_E5M2: return launch2<D9_F8_E5M2, AFF>(dt, dst, src, n, a, b, grid, s);
  case D9_F16: return launch2<D9_F16, AFF>(dt, dst, src, n, a, b, grid, s);
  case D9_BF16: return launch2<D9_BF16, AFF>(dt, dst, src, n, a, b, grid, s);
  case D9_F32: return launch2<D9_F32, AFF>(dt, dst, src, n, a, b, grid, s);
  default: return cudaErrorInvalidValue;
  }
}

/* n elements in jobs of cap; element sizes ss, ds bytes. */
struct cast_op {
  unsigned char *dst;
  const unsigned char *src;
  int st, dt, aff;
  size_t ss, ds;
  float a, b;
  int64_t n, at, cap;

  struct job {
    int64_t off, cnt; /* elements */
  };

  bool next(job *j) {
    if (at >= n)
      return false;
    j->off = at;
    j->cnt = n - at < cap ? n - at : cap;
    at += j->cnt;
    return true;
  }
  void pack(const job &j, d9c_lane *L) {
    memcpy(L->h_in, src + (size_t)j.off * ss, (size_t)j.cnt * ss);
  }
  cudaError_t launch(const job &j, d9c_lane *L, const d9c_slot *s) {
    cudaError_t e = d9c_h2d(L->d_in, L->h_in, (size_t)j.cnt * ss, L->stream);
    if (e == cudaSuccess)
      e = aff ? launch1<true>(st, dt, L->d_out, L->d_in, j.cnt, a, b, d9c_grid(s, j.cnt),
                              L->stream)
              : launch1<false>(st, dt, L->d_out, L->d_in, j.cnt, a, b, d9c_grid(s, j.cnt),
                               L->stream);
    if (e == cudaSuccess)
      e = d9c_d2h(L->h_out, L->d_out, (size_t)j.cnt * ds, L->stream);
    return e;
  }
  void unpack(const job &j, d9c_lane *L) {
    memcpy(dst + (size_t)j.off * ds, L->h_out, (size_t)j.cnt * ds);
  }
};

static int run_cast(int dev, void *dst, int dt, const void *src, int st, int64_t n, int aff,
                    float a, float b) {
  size_t ss = d9_dtype_size((d9_dtype)st), ds = d9_dtype_size((d9_dtype)dt);
  cast_op op;
  op.dst = (unsigned char *)dst;
  op.src = (const unsigned char *)src;
  op.st = st;
  op.dt = dt;
  op.aff = aff;
  op.ss = ss;
  op.ds = ds;
  op.a = a;
  op.b = b;
  op.n = n;
  op.at = 0;
  op.cap = D9C_STAGE_BYTES / (int64_t)(ss > ds ? ss : ds);
  d9c_slot *s;
  int r = d9c_slot_acquire(dev, &s);
  if (r)
    return r;
  r = d9c_run(s, op);
  d9c_slot_release(s);
  return r;
}

/* Arguments checked as d9_cpu_cast does (d9_cast_prologue), with its answers. */
int d9c_cast(int dev, void *dst, int dt, const void *src, int st, int64_t n) {
  int r = d9_cast_prologue(dst, (d9_dtype)dt, src, (d9_dtype)st, n);
  if (r)
    return r < 0 ? r : 0;
  return run_cast(dev, dst, dt, src, st, n, 0, 0.0f, 0.0f);
}

/* Arguments checked in backend.c cpu_affine's order, with its answers. */
int d9c_affine(int dev, void *dst, int dt, const void *src, int st, int64_t n, float a,
               float b) {
  if (n < 0 || !d9_dtype_is_castable((d9_dtype)st) || !d9_dtype_is_castable((d9_dtype)dt))
    return -EINVAL;
  if (n == 0)
    return 0;
  if (dst == NULL || src == NULL)
    return -EINVAL;
  size_t ssize = d9_dtype_size((d9_dtype)st), dsize = d9_dtype_size((d9_dtype)dt);
  if ((uint64_t)n > SIZE_MAX / ssize || (uint64_t)n > SIZE_MAX / dsize)
    return -EOVERFLOW;
  return run_cast(dev, dst, dt, src, st, n, 1, a, b);
}

/* ---- the start-up probe (backend.cu) ---- */

__global__ void d9c_probe_kernel(uint32_t *out, const uint32_t *x, int n, float a, float b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n)
    return;
  uint32_t w = x[i];
  out[5 * i + 0] = d9c_widen_f16(d9c_narrow_f16(w));
  out[5 * i + 1] = d9c_widen_bf16(d9c_narrow_bf16(w));
  out[5 * i + 2] = d9c_widen_e4m3(d9c_narrow_e4m3(w));
  out[5 * i + 3] = d9c_widen_e5m2(d9c_narrow_e5m2(w));
  out[5 * i + 4] = d9c_affine(w, a, b);
}

cudaError_t d9c_probe_launch(uint32_t *out, const uint32_t *x, int n, float a, float b,
                             cudaStream_t st) {
  d9c_probe_kernel<<<(n + 127) / 128, 128, 0, st>>>(out, x, n, a, b);
  return cudaGetLastError();
}
