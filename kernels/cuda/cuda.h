/* cuda.h - the CUDA backend's entry points (built when D9DFS_CUDA finds
 * nvcc; see CMakeLists.txt). Without CUDA, kernels/cuda_stub.c provides
 * the same functions answering -ENODEV, so callers need no #ifdefs. */
#ifndef D9_CUDA_H
#define D9_CUDA_H

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices (0 when the driver finds none), or -ENODEV
 * when d9dfs was built without CUDA. Never aborts. */
int d9_cuda_device_count(void);

/* The CUDA backend for device dev, or NULL (no such device, no driver, or
 * no CUDA build). Borrowed, static lifetime. */
const d9_backend *d9_backend_cuda(int dev);

#ifdef __cplusplus
}
#endif

#endif
