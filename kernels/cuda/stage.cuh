/* stage.cuh - what the CUDA op files share: per-device staging slots and
 * the pipeline that streams a host-to-host operation through them.
 *
 * A call of a backend member works on host memory (the reader's buffers).
 * It takes a slot of its device (backend.cu), cuts the work into jobs that
 * fit the slot's staging buffers, and runs them through two lanes: while
 * the GPU copies in, computes and copies out one job on one lane's stream,
 * the host packs the next job into the other lane's pinned buffer and
 * unpacks the finished one. Pinned and device buffers live as long as the
 * process and are reused by every call. Nothing here aborts: a CUDA error
 * is -EIO, a failed allocation -ENOMEM, and the caller falls back to the
 * CPU.
 */
#ifndef D9_CUDA_STAGE_CUH
#define D9_CUDA_STAGE_CUH

#include <errno.h>
#include <stdint.h>

#include <cuda_runtime.h>

extern "C" { /* kernels.h has no C++ guards of its own */
#include "kernels/kernels.h"
}
#include "kernels/cuda/convert.cuh"

enum {
  D9C_MAX_DEVICES = 16,        /* devices with a backend (d9_backend_cuda) */
  D9C_SLOTS = 4,               /* concurrent calls per device */
  D9C_LANES = 2,               /* jobs in flight per call */
  D9C_STAGE_BYTES = 8 << 20,   /* bytes of each staging buffer */
  D9C_THREADS = 256,           /* threads per block of the 1-D kernels */
};

/* One lane: a stream and its buffers, D9C_STAGE_BYTES each. h_* pinned
 * host, d_* device; in = the job's input, out = its output (amax: the
 * job's block maxima), aux = its window of scales. Owned by the slot. A
 * slot is 2 x 3 x 8 MiB = 48 MiB pinned plus 48 MiB of device memory,
 * allocated on its first use; a device has at most D9C_SLOTS of them. */
typedef struct d9c_lane {
  cudaStream_t stream;
  unsigned char *h_in, *h_out, *h_aux;
  unsigned char *d_in, *d_out, *d_aux;
} d9c_lane;

/* A slot: what one call uses alone from d9c_slot_acquire to release. */
typedef struct d9c_slot {
  int dev;              /* CUDA device ordinal */
  int blocks;           /* blocks for a grid-stride 1-D kernel (SMs x 8) */
  d9c_nan_rules nr;     /* the host division's NaN rules (quant) */
  d9c_lane lane[D9C_LANES];
} d9c_slot;

/* Takes a free slot of device dev (allocating its buffers on first use,
 * waiting while all D9C_SLOTS are busy) and makes dev current on the
 * calling thread. Returns 0, -ENODEV (no backend for dev), -ENOMEM (pinned
 * or device memory) or -EIO (another CUDA error). */
int d9c_slot_acquire(int dev, d9c_slot **out);
/* Gives the slot back; s may be NULL. */
void d9c_slot_release(d9c_slot *s);

/* 0, or -EIO after clearing the calling thread's CUDA error state. */
static inline int d9c_err(cudaError_t e) {
  if (e == cudaSuccess)
    return 0;
  (void)cudaGetLastError();
  return -EIO;
}

static inline unsigned d9c_grid(const d9c_slot *s, int64_t n) {
  int64_t b = (n + D9C_THREADS - 1) / D9C_THREADS;
  return (unsigned)(b < s->blocks ? (b > 0 ? b : 1) : s->blocks);
}

/* Runs op through the lanes of s. Op provides:
 *   typedef ... job;
 *   bool next(job *j);                  the next job, false when done
 *   void pack(const job &j, d9c_lane *L);     host: inputs into L->h_*
 *   cudaError_t launch(const job &j, d9c_lane *L, const d9c_slot *s);
 *                                       H2D, kernel, D2H on L->stream
 *   void unpack(const job &j, d9c_lane *L);   host: L->h_out to the caller
 * pack and unpack run on the calling thread, unpack in submission order;
 * after an error no further job is unpacked.
 * Returns 0 or -EIO; every lane is idle on return. */
template <class Op> static int d9c_run(d9c_slot *s, Op &op) {
  typename Op::job pending[D9C_LANES], j;
  int busy[D9C_LANES] = {0}, k = 0, rc = 0;
  while (op.next(&j)) {
    d9c_lane *L = &s->lane[k];
    if (busy[k]) {
      busy[k] = 0;
      if ((rc = d9c_err(cudaStreamSynchronize(L->stream))) != 0)
        break;
      op.unpack(pending[k], L);
    }
    op.pack(j, L);
    pending[k] = j;
    busy[k] = 1; /* even on a failed launch: the drain waits for it */
    if ((rc = d9c_err(op.launch(j, L, s))) != 0)
      break;
    k = (k + 1) % D9C_LANES;
  }
  for (int i = 0; i < D9C_LANES; i++) { /* oldest first */
    int l = (k + i) % D9C_LANES;
    if (!busy[l])
      continue;
    int e = d9c_err(cudaStreamSynchronize(s->lane[l].stream));
    if (rc == 0 && e == 0)
      op.unpack(pending[l], &s->lane[l]);
    if (rc == 0)
      rc = e;
  }
  return rc;
}

/* Asynchronous copies on st; nothing for n = 0. */
static inline cudaError_t d9c_h2d(void *d, const void *h, size_t n, cudaStream_t st) {
  return n ? cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, st) : cudaSuccess;
}

static inline cudaError_t d9c_d2h(void *h, const void *d, size_t n, cudaStream_t st) {
  return n ? cudaMemcpyAsync(h, d, n, cudaMemcpyDeviceToHost, st) : cudaSuccess;
}

/* ---- the op entry points (cast.cu, fp8.cu, permute.cu); each validates
 * its arguments exactly as the CPU function does, then runs on device dev
 * ---- */
int d9c_cast(int dev, void *dst, int dt, const void *src, int st, int64_t n);
int d9c_affine(int dev, void *dst, int dt, const void *src, int st, int64_t n, float a,
               float b);
int d9c_fp8_dequant(int dev, void *dst, const uint8_t *w, int wt, const float *scale,
                    const d9_fp8_box *box);
int d9c_fp8_amax(int dev, float *amax, const float *x, const d9_fp8_box *box);
int d9c_fp8_quant(int dev, uint8_t *dst, const float *x, const float *scale,
                  const d9_fp8_box *box);
int d9c_transpose(int dev, void *dst, const void *src, size_t es, int64_t batch,
                  int64_t rows, int64_t cols);

/* The probe kernel's launcher (cast.cu): for each of n F32 inputs x[i],
 * out[5 i .. 5 i + 4] = narrow to F16, BF16, E4M3, E5M2 (widened back to
 * F32 bits), and affine(x, a, b). Used once per device by backend.cu. */
cudaError_t d9c_probe_launch(uint32_t *out, const uint32_t *x, int n, float a, float b,
                             cudaStream_t st);

#endif
