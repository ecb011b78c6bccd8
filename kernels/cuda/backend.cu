/* backend.cu - the CUDA backend: device discovery, one d9_backend per
 * device, and the staging slots the op files (cast.cu, fp8.cu, permute.cu)
 * run their calls through (stage.cuh).
 *
 * d9_backend's members take no context argument, so each device's backend
 * is a table of functions instantiated for its ordinal (dev_fns<D>), and
 * the per-device state lives in one file-scope table, g_dev: the one
 * mutable static of the kernels, forced by that interface. Every field
 * says which lock guards it. A device's backend is made on the first
 * d9_backend_cuda(dev) that succeeds and lives as long as the process (its
 * pinned and device buffers too: the OS reclaims them at exit). CUDA does
 * not survive fork(): in a child of the process that made a backend, the
 * backend is NULL and its members answer -ENODEV.
 *
 * Before a device is handed out, a probe kernel converts a set of F32
 * values (ties, subnormals, overflow, NaN, Inf) to every format and through
 * affine with a subnormal product, and the bits are compared with the CPU
 * functions. A mismatch - a build with -ftz / --use_fast_math reaching the
 * arithmetic some other way, a miscompile, a device running wrong code -
 * leaves the device without a backend (NULL), so evaluation stays on the
 * CPU rather than serving different bytes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cuda/stage.cuh"

#include "kernels/cuda/cuda.h"

/* ---- per-device state ---- */

typedef struct dev_state {
  int state;                     /* g_lock: 0 untried, 1 ready, -errno failed */
  pid_t pid;                     /* g_lock: the process that made it ready */
  int blocks;                    /* set before state = 1, then read-only */
  int slot_busy[D9C_SLOTS];      /* g_lock */
  int slot_ready[D9C_SLOTS];     /* g_lock: buffers allocated */
  d9c_slot slots[D9C_SLOTS];     /* owned by the thread holding slot_busy */
} dev_state;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_slot_freed = PTHREAD_COND_INITIALIZER; /* with g_lock */
static dev_state g_dev[D9C_MAX_DEVICES];                       /* see dev_state */

/* The host division's NaN rules (convert.cuh d9c_nan_rules), probed with
 * volatile operands so the compiler cannot fold them. */
static d9c_nan_rules host_nan_rules(void) {
  volatile float zero = 0.0f, one = 1.0f;
  volatile uint32_t nbits = 0xffc00001u; /* a negative quiet NaN */
  float neg_nan;
  uint32_t nb = nbits;
  memcpy(&neg_nan, &nb, sizeof neg_nan);
  volatile float vn = neg_nan;
  float inv = zero / zero, prop = one / vn;
  d9c_nan_rules r;
  r.invalid_sign = d9c_bits(inv) & 0x80000000u;
  r.nan_prop = (d9c_bits(prop) & 0x80000000u) != 0;
  return r;
}

static void lane_free(d9c_lane *L) {
  if (L->stream)
    (void)cudaStreamDestroy(L->stream);
  (void)cudaFreeHost(L->h_in);
  (void)cudaFreeHost(L->h_out);
  (void)cudaFreeHost(L->h_aux);
  (void)cudaFree(L->d_in);
  (void)cudaFree(L->d_out);
  (void)cudaFree(L->d_aux);
  memset(L, 0, sizeof *L);
}

/* Streams and buffers of a slot; the device is current. 0, -ENOMEM, -EIO. */
static int slot_alloc(d9c_slot *s) {
  for (int l = 0; l < D9C_LANES; l++) {
    d9c_lane *L = &s->lane[l];
    cudaError_t e = cudaStreamCreateWithFlags(&L->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      L->stream = NULL;
      goto fail_io;
    }
    if (cudaHostAlloc((void **)&L->h_in, D9C_STAGE_BYTES, cudaHostAllocDefault) != cudaSuccess ||
        cudaHostAlloc((void **)&L->h_out, D9C_STAGE_BYTES, cudaHostAllocDefault) != cudaSuccess ||
        cudaHostAlloc((void **)&L->h_aux, D9C_STAGE_BYTES, cudaHostAllocDefault) != cudaSuccess ||
        cudaMalloc((void **)&L->d_in, D9C_STAGE_BYTES) != cudaSuccess ||
        cudaMalloc((void **)&L->d_out, D9C_STAGE_BYTES) != cudaSuccess ||
        cudaMalloc((void **)&L->d_aux, D9C_STAGE_BYTES) != cudaSuccess)
      goto fail_nomem;
  }
  return 0;
fail_nomem:
  for (int l = 0; l < D9C_LANES; l++)
    lane_free(&s->lane[l]);
  (void)cudaGetLastError();
  return -ENOMEM;
fail_io:
  for (int l = 0; l < D9C_LANES; l++)
    lane_free(&s->lane[l]);
  (void)cudaGetLastError();
  return -EIO;
}

int d9c_slot_acquire(int dev, d9c_slot **out) {
  *out = NULL;
  if (dev < 0 || dev >= D9C_MAX_DEVICES)
    return -ENODEV;
  dev_state *d = &g_dev[dev];
  int k = -1;
  pthread_mutex_lock(&g_lock);
  if (d->state != 1 || d->pid != getpid()) { /* a forked child has no context */
    pthread_mutex_unlock(&g_lock);
    return -ENODEV;
  }
  for (;;) {
    for (int i = 0; i < D9C_SLOTS && k < 0; i++) /* a ready one first */
      if (!d->slot_busy[i] && d->slot_ready[i])
        k = i;
    for (int i = 0; i < D9C_SLOTS && k < 0; i++)
      if (!d->slot_busy[i])
        k = i;
    if (k >= 0)
      break;
    pthread_cond_wait(&g_slot_freed, &g_lock);
  }
  d->slot_busy[k] = 1;
  int ready = d->slot_ready[k];
  pthread_mutex_unlock(&g_lock);

  d9c_slot *s = &d->slots[k];
  int r = d9c_err(cudaSetDevice(dev));
  if (r == 0 && !ready) {
    memset(s, 0, sizeof *s);
    s->dev = dev;
    s->blocks = d->blocks;
    s->nr = host_nan_rules();
    r = slot_alloc(s);
  }
  if (r) {
    pthread_mutex_lock(&g_lock);
    d->slot_busy[k] = 0;
    pthread_cond_broadcast(&g_slot_freed);
    pthread_mutex_unlock(&g_lock);
    return r;
  }
  if (!ready) {
    pthread_mutex_lock(&g_lock);
    d->slot_ready[k] = 1;
    pthread_mutex_unlock(&g_lock);
  }
  *out = s;
  return 0;
}

void d9c_slot_release(d9c_slot *s) {
  if (s == NULL)
    return;
  dev_state *d = &g_dev[s->dev];
  pthread_mutex_lock(&g_lock);
  d->slot_busy[s - d->slots] = 0;
  pthread_cond_broadcast(&g_slot_freed);
  pthread_mutex_unlock(&g_lock);
}

/* ---- the probe ---- */

/* F32 inputs: ties and their neighbours in every format, subnormals of
 * F32 and of the targets, the overflow thresholds, Inf, NaNs. */
static const uint32_t probe_in[] = {
    0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x00800000, 0x3f800000,
    0x3f801000, 0x3f803000, 0x3f808000, 0x3f818000, 0x3f880000, 0x3f900000,
    0x477fe000, 0x477ff000, 0x477fefff, 0x47800000, 0x7f7f8000, 0x7f7fffff,
    0x43e00000, 0x43e80000, 0x43f00000, 0xc3f00001, 0x47600000, 0x47700000,
    0x33000000, 0x33000001, 0x33800000, 0x337fffff, 0x3a800000, 0x3b000000,
    0x3a000000, 0x39ffffff, 0x37000000, 0x36800000, 0x36800001, 0x38c00000,
    0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x3eaaaaab,
};
enum { PROBE_N = sizeof probe_in / sizeof probe_in[0] };
static const float probe_a = 0x1p-130f, probe_b = 0x1p-149f; /* subnormal product */

static void probe_expect(uint32_t *want) {
  for (int i = 0; i < PROBE_N; i++) {
    float x = d9c_float(probe_in[i]);
    want[5 * i + 0] = d9c_bits(d9_f16_to_f32(d9_f32_to_f16(x)));
    want[5 * i + 1] = d9c_bits(d9_bf16_to_f32(d9_f32_to_bf16(x)));
    want[5 * i + 2] = d9c_bits(d9_e4m3_to_f32(d9_f32_to_e4m3(x)));
    want[5 * i + 3] = d9c_bits(d9_e5m2_to_f32(d9_f32_to_e5m2(x)));
    float y = 0.0f;
    const d9_backend *cpu = d9_backend_cpu();
    if (cpu->affine(&y, D9_F32, &x, D9_F32, 1, probe_a, probe_b) != 0)
      y = 0.0f;
    want[5 * i + 4] = d9c_bits(y);
  }
}

/* Runs the probe on dev (current). 0, -ENOMEM, -EIO, or -ENOEXEC when the
 * device's bits differ from the CPU's. */
static int probe(void) {
  uint32_t *din = NULL, *dout = NULL, got[5 * PROBE_N], want[5 * PROBE_N];
  int r = -ENOMEM;
  if (cudaMalloc((void **)&din, sizeof probe_in) != cudaSuccess)
    goto out;
  if (cudaMalloc((void **)&dout, sizeof got) != cudaSuccess)
    goto free_in;
  r = -EIO;
  if (cudaMemcpy(din, probe_in, sizeof probe_in, cudaMemcpyHostToDevice) != cudaSuccess ||
      d9c_probe_launch(dout, din, PROBE_N, probe_a, probe_b, 0) != cudaSuccess ||
      cudaMemcpy(got, dout, sizeof got, cudaMemcpyDeviceToHost) != cudaSuccess)
    goto free_out;
  probe_expect(want);
  r = memcmp(got, want, sizeof got) == 0 ? 0 : -ENOEXEC;
free_out:
  (void)cudaFree(dout);
free_in:
  (void)cudaFree(din);
out:
  (void)cudaGetLastError();
  return r;
}

/* Makes dev usable: the device exists, runs our code, and the probe
 * matches. Called with g_lock held, once per device. */
static int dev_init(int dev, dev_state *d) {
  int n = d9_cuda_device_count();
  if (dev >= n)
    return -ENODEV;
  cudaDeviceProp p;
  if (cudaSetDevice(dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return -ENODEV;
  }
  int r = probe(); /* also fails when the binary has no code for the device */
  if (r)
    return r;
  d->blocks = p.multiProcessorCount > 0 ? p.multiProcessorCount * 8 : 1024;
  return 0;
}

/* ---- one function table per device ---- */

template <int D> struct dev_fns {
  static int cast(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n) {
    return d9c_cast(D, dst, dt, src, st, n);
  }
  static int affine(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n, float a,
                    float b) {
    return d9c_affine(D, dst, dt, src, st, n, a, b);
  }
  static int fp8_dequant(void *dst, const uint8_t *w, d9_dtype wt, const float *scale,
                         const d9_fp8_box *box) {
    return d9c_fp8_dequant(D, dst, w, wt, scale, box);
  }
  static int fp8_amax(float *amax, const float *x, const d9_fp8_box *box) {
    return d9c_fp8_amax(D, amax, x, box);
  }
  static int fp8_quant(uint8_t *dst, const float *x, const float *scale,
                       const d9_fp8_box *box) {
    return d9c_fp8_quant(D, dst, x, scale, box);
  }
  static int transpose(void *dst, const void *src, size_t es, int64_t batch, int64_t rows,
                       int64_t cols) {
    return d9c_transpose(D, dst, src, es, batch, rows, cols);
  }
};

/* Positional, in kernels.h's member order: constant-initialised, and
 * members appended to d9_backend later stay NULL. */
#define D9C_BE(D)                                                                   \
  {"cuda:" #D,             dev_fns<D>::cast,      dev_fns<D>::affine,              \
   dev_fns<D>::fp8_dequant, dev_fns<D>::fp8_amax, dev_fns<D>::fp8_quant,           \
   dev_fns<D>::transpose}
static const d9_backend g_backends[D9C_MAX_DEVICES] = {
    D9C_BE(0),  D9C_BE(1),  D9C_BE(2),  D9C_BE(3),  D9C_BE(4),  D9C_BE(5),
    D9C_BE(6),  D9C_BE(7),  D9C_BE(8),  D9C_BE(9),  D9C_BE(10), D9C_BE(11),
    D9C_BE(12), D9C_BE(13), D9C_BE(14), D9C_BE(15)};
#undef D9C_BE

/* ---- the public entry points (cuda.h) ---- */

extern "C" int d9_cuda_device_count(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); /* clear the sticky error; no driver = no device */
    return 0;
  }
  return n;
}

extern "C" const d9_backend *d9_backend_cuda(int dev) {
  if (dev < 0 || dev >= D9C_MAX_DEVICES)
    return NULL;
  dev_state *d = &g_dev[dev];
  pthread_mutex_lock(&g_lock);
  if (d->state == 0) {
    int r = dev_init(dev, d);
    d->state = r ? r : 1;
    d->pid = getpid();
  }
  int ok = d->state == 1 && d->pid == getpid();
  pthread_mutex_unlock(&g_lock);
  return ok ? &g_backends[dev] : NULL;
}

extern "C" int d9_cuda_backend_status(int dev) {
  if (dev < 0 || dev >= D9C_MAX_DEVICES)
    return -ENODEV;
  pthread_mutex_lock(&g_lock);
  int s = g_dev[dev].state, forked = s != 0 && g_dev[dev].pid != getpid();
  pthread_mutex_unlock(&g_lock);
  return forked ? -ECHILD : s == 1 ? 0 : s == 0 ? -EAGAIN : s;
}
