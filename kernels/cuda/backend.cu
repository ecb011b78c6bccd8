/* backend.cu - CUDA device discovery. The conversion kernels of the GPU
 * issue go here behind the d9_backend interface; until they exist
 * d9_backend_cuda() answers NULL and evaluation stays on the CPU. */
#include <cerrno>

#include <cuda_runtime.h>

#include "kernels/cuda/cuda.h"

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
  (void)dev;
  return nullptr;
}
