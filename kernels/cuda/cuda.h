/* cuda.h - the CUDA backend's entry points (built when D9DFS_CUDA finds
 * nvcc; see CMakeLists.txt). Without CUDA, kernels/cuda_stub.c provides
 * the same functions answering -ENODEV, so callers need no #ifdefs.
 *
 * The backend of a device has every member of d9_backend, the optional
 * ones included (fp8_dequant, fp8_amax, fp8_quant, transpose), and gives
 * the CPU backend's bits for every input (tests/test_cuda.c checks it).
 * Each member copies its host input into pinned staging buffers, runs on
 * the device, and copies the result back before returning; calls from
 * several threads run concurrently (up to 4 per device, more wait). A
 * member never aborts: -EIO (a CUDA error), -ENOMEM (pinned or device
 * memory), -ENOTSUP (an input it does not take), -ENODEV (see fork below)
 * mean "compute this call on the CPU" (what the destination holds after a
 * failed call is unspecified); -EINVAL and -EOVERFLOW are the CPU's own
 * answers. A call makes its device current on the calling thread.
 *
 * CUDA does not survive fork(): call these functions (d9_cuda_device_count
 * included: it initialises the driver) only after a daemon has forked. A
 * child of a process that already made a backend gets NULL (status
 * -ECHILD) and members answering -ENODEV.
 */
#ifndef D9_CUDA_H
#define D9_CUDA_H

#ifdef __cplusplus
extern "C" { /* kernels.h has no C++ guards of its own */
#endif

#include "kernels/kernels.h"

/* Number of usable CUDA devices (0 when the driver finds none), or -ENODEV
 * when d9dfs was built without CUDA. Never aborts. */
int d9_cuda_device_count(void);

/* The CUDA backend for device dev (0 to 15), or NULL (no such device, no
 * driver, no CUDA build, or the device failed its start-up probe: a few
 * conversions run on it that must match the CPU's bits). The first call
 * for a device creates its context and runs the probe (tens to hundreds of
 * ms); later calls return at once. Borrowed, static lifetime. Thread-safe. */
const d9_backend *d9_backend_cuda(int dev);

/* Why d9_backend_cuda(dev) is NULL: 0 (it is not), -EAGAIN (not asked
 * yet), -ENODEV (no such device, or no CUDA build), -ENOMEM / -EIO (CUDA
 * failed while probing, e.g. no code in this binary for the device's
 * architecture), -ENOEXEC (the probe's bits differ from the CPU's),
 * -ECHILD (made before this process was forked). CUDA builds only until
 * kernels/cuda_stub.c answers it too (-ENODEV). */
int d9_cuda_backend_status(int dev);

#ifdef __cplusplus
}
#endif

#endif
