/* bits.h - float bit patterns for the tests (memcpy: no aliasing UB). */
#ifndef D9_TEST_BITS_H
#define D9_TEST_BITS_H

#include <stdint.h>
#include <string.h>

static inline uint32_t tu_fbits(float f) {
  uint32_t w;
  memcpy(&w, &f, sizeof w);
  return w;
}

static inline float tu_ffrom(uint32_t w) {
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
}

#endif
