/* cuda_stub.c - the CUDA entry points in a build without CUDA. */
#include <errno.h>
#include <stddef.h>

#include "kernels/cuda/cuda.h"

int d9_cuda_device_count(void) { return -ENODEV; }

const d9_backend *d9_backend_cuda(int dev) {
  (void)dev;
  return NULL;
}

int d9_cuda_backend_status(int dev) {
  (void)dev;
  return -ENODEV;
}
