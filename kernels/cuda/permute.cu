/* permute.cu - the CUDA backend's transpose member (kernels.h): src
 * [batch, rows, cols] -> dst [batch, cols, rows], elements of 1, 2, 4 or 8
 * bytes moved as unsigned integers, so every bit is kept (NaN payloads
 * included); other sizes answer -ENOTSUP.
 *
 * The kernel is the classic shared-memory tiled transpose (32 x 32 tiles,
 * padded against bank conflicts; 32 x 8 threads). Host side: when whole
 * matrices fit a staging buffer a job is k consecutive matrices (one copy
 * each way); otherwise a job is a tile of one matrix - tr source rows x tc
 * source columns, gathered row by row into staging and scattered back as
 * tc rows of tr elements.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/stage.cuh"

static const uint32_t TILE = 32, TROWS = 8, MAX_GRID_YZ = 65535;

/* k matrices [R, C] at src -> [C, R] at dst, dense. */
template <class T>
__global__ void d9c_transpose_kernel(T *__restrict__ dst, const T *__restrict__ src,
                                     uint32_t k, uint32_t R, uint32_t C) {
  __shared__ T tile[TILE][TILE + 1];
  uint32_t tx = threadIdx.x, ty = threadIdx.y, c0 = blockIdx.x * TILE;
  for (uint32_t z = blockIdx.z; z < k; z += gridDim.z) { /* uniform in the block */
    const T *s = src + (size_t)z * R * C;
    T *d = dst + (size_t)z * R * C;
    for (uint32_t r0 = blockIdx.y * TILE; r0 < R; r0 += gridDim.y * TILE) {
      for (uint32_t j = ty; j < TILE; j += TROWS)
        if (r0 + j < R && c0 + tx < C)
          tile[j][tx] = s[(size_t)(r0 + j) * C + c0 + tx];
      __syncthreads();
      for (uint32_t j = ty; j < TILE; j += TROWS)
        if (c0 + j < C && r0 + tx < R)
          d[(size_t)(c0 + j) * R + r0 + tx] = tile[tx][j];
      __syncthreads();
    }
  }
}

template <class T>
static cudaError_t launch_t(void *dst, const void *src, uint32_t k, uint32_t R, uint32_t C,
                            cudaStream_t st) {
  uint32_t gy = (R + TILE - 1) / TILE;
  dim3 grid((C + TILE - 1) / TILE, gy < MAX_GRID_YZ ? gy : MAX_GRID_YZ,
            k < MAX_GRID_YZ ? k : MAX_GRID_YZ);
  d9c_transpose_kernel<T><<<grid, dim3(TILE, TROWS), 0, st>>>((T *)dst, (const T *)src, k, R, C);
  return cudaGetLastError();
}

/* One job: matrices [b, b + k); of each, source rows [r0, r0 + tr) and
 * columns [c0, c0 + tc) (k > 1 only for whole matrices). */
struct tjob {
  int64_t b, k, r0, tr, c0, tc;
};

struct transpose_op {
  typedef tjob job;
  unsigned char *dst;
  const unsigned char *src;
  size_t es;
  int64_t batch, R, C, cap;
  int64_t tr, tc;  /* the tile when matrices do not fit */
  int64_t b, r, c; /* cursor */

  bool next(job *j) {
    if (b >= batch)
      return false;
    j->b = b;
    if (R * C <= cap) {
      int64_t k = cap / (R * C);
      j->k = batch - b < k ? batch - b : k;
      j->r0 = 0;
      j->tr = R;
      j->c0 = 0;
      j->tc = C;
      b += j->k;
      return true;
    }
    j->k = 1;
    j->r0 = r;
    j->tr = R - r < tr ? R - r : tr;
    j->c0 = c;
    j->tc = C - c < tc ? C - c : tc;
    c += j->tc;
    if (c == C) {
      c = 0;
      r += j->tr;
      if (r == R) {
        r = 0;
        b++;
      }
    }
    return true;
  }
  void pack(const job &j, d9c_lane *L) {
    const unsigned char *s = src + (size_t)(j.b * R * C) * es;
    if (j.tc == C) { /* whole rows: one run */
      memcpy(L->h_in, s + (size_t)(j.r0 * C) * es, (size_t)(j.k * j.tr * C) * es);
      return;
    }
    for (int64_t i = 0; i < j.tr; i++)
      memcpy(L->h_in + (size_t)(i * j.tc) * es, s + (size_t)((j.r0 + i) * C + j.c0) * es,
             (size_t)j.tc * es);
  }
  cudaError_t launch(const job &j, d9c_lane *L, const d9c_slot *s) {
    size_t bytes = (size_t)(j.k * j.tr * j.tc) * es;
    cudaError_t e = d9c_h2d(L->d_in, L->h_in, bytes, L->stream);
    if (e != cudaSuccess)
      return e;
    uint32_t k = (uint32_t)j.k, nr = (uint32_t)j.tr, nc = (uint32_t)j.tc;
    switch (es) {
    case 1: e = launch_t<uint8_t>(L->d_out, L->d_in, k, nr, nc, L->stream); break;
    case 2: e = launch_t<uint16_t>(L->d_out, L->d_in, k, nr, nc, L->stream); break;
    case 4: e = launch_t<uint32_t>(L->d_out, L->d_in, k, nr, nc, L->stream); break;
    default: e = launch_t<uint64_t>(L->d_out, L->d_in, k, nr, nc, L->stream); break;
    }
    if (e != cudaSuccess)
      return e;
    return d9c_d2h(L->h_out, L->d_out, bytes, L->stream);
  }
  void unpack(const job &j, d9c_lane *L) {
    unsigned char *d = dst + (size_t)(j.b * R * C) * es;
    if (j.tr == R) { /* whole rows of the destination: one run */
      memcpy(d + (size_t)(j.c0 * R) * es, L->h_out, (size_t)(j.k * j.tc * R) * es);
      return;
    }
    for (int64_t i = 0; i < j.tc; i++)
      memcpy(d + (size_t)((j.c0 + i) * R + j.r0) * es, L->h_out + (size_t)(i * j.tr) * es,
             (size_t)j.tr * es);
  }
};

int d9c_transpose(int dev, void *dst, const void *src, size_t es, int64_t batch,
                  int64_t rows, int64_t cols) {
  if (batch < 0 || rows < 0 || cols < 0)
    return -EINVAL;
  if (batch == 0 || rows == 0 || cols == 0)
    return 0;
  if (dst == NULL || src == NULL || es == 0)
    return -EINVAL;
  if (es != 1 && es != 2 && es != 4 && es != 8)
    return -ENOTSUP;
  if (rows > INT64_MAX / cols || batch > INT64_MAX / (rows * cols) ||
      (uint64_t)(batch * rows * cols) > SIZE_MAX / es)
    return -EOVERFLOW;
  transpose_op op;
  op.dst = (unsigned char *)dst;
  op.src = (const unsigned char *)src;
  op.es = es;
  op.batch = batch;
  op.R = rows;
  op.C = cols;
  op.cap = D9C_STAGE_BYTES / (int64_t)es;
  /* tiles: up to cap / 64 columns wide, so a tile has at least 64 rows and
   * every gathered or scattered run is at least 64 elements or a whole row */
  op.tc = cols < op.cap / 64 ? cols : op.cap / 64;
  op.tr = op.cap / op.tc < rows ? op.cap / op.tc : rows;
  op.b = op.r = op.c = 0;
  d9c_slot *s;
  int r = d9c_slot_acquire(dev, &s);
  if (r)
    return r;
  r = d9c_run(s, op);
  d9c_slot_release(s);
  return r;
}
