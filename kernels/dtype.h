/* dtype.h - the element types d9dfs reads and writes.
 *
 * Names are the safetensors spellings (case-sensitive, as the reference
 * implementation accepts them). D9_DTYPE_TABLE is the single table the enum,
 * the name list and the size list expand from.
 */
#ifndef D9_DTYPE_H
#define D9_DTYPE_H

#include <stddef.h>
#include <stdint.h>

/* X(enum suffix, safetensors name, element size in bytes) */
#define D9_DTYPE_TABLE(X) \
  X(BOOL, "BOOL", 1)      \
  X(U8, "U8", 1)          \
  X(I8, "I8", 1)          \
  X(F8_E4M3, "F8_E4M3", 1) \
  X(F8_E5M2, "F8_E5M2", 1) \
  X(I16, "I16", 2)        \
  X(U16, "U16", 2)        \
  X(F16, "F16", 2)        \
  X(BF16, "BF16", 2)      \
  X(I32, "I32", 4)        \
  X(U32, "U32", 4)        \
  X(F32, "F32", 4)        \
  X(I64, "I64", 8)        \
  X(U64, "U64", 8)        \
  X(F64, "F64", 8)

typedef enum {
#define D9_X(e, name, size) D9_##e,
  D9_DTYPE_TABLE(D9_X)
#undef D9_X
  D9_DTYPE_COUNT,
  D9_DTYPE_INVALID = -1
} d9_dtype;

/* The safetensors name of t, or "?" for an invalid value. */
const char *d9_dtype_name(d9_dtype t);
/* Bytes per element; 0 for an invalid value. */
size_t d9_dtype_size(d9_dtype t);
/* Exact, case-sensitive lookup of a name of len bytes; D9_DTYPE_INVALID if unknown. */
d9_dtype d9_dtype_parse(const char *name, size_t len);
/* 1 for the floating types the cast kernels convert between
 * (F32, F16, BF16, F8_E4M3, F8_E5M2), else 0. */
int d9_dtype_is_castable(d9_dtype t);

/* The argument checks every backend's cast makes, in this order: -EINVAL
 * for n < 0, an invalid dtype or a pair that is neither identical nor both
 * castable; 1 (nothing left to do) for n == 0; -EINVAL for a NULL pointer;
 * -EOVERFLOW when n elements do not fit in a size_t of bytes; 1 after
 * copying when st == dt; 0 when the caller has elements to convert. */
int d9_cast_prologue(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n);

#endif
