/* dtype.h - the element types d9dfs reads and writes.
 *
 * Names are the safetensors spellings (case-sensitive, as the reference
 * implementation accepts them). D9_DTYPE_TABLE is the single table the enum,
 * the name list and the size list expand from.
 */
#ifndef D9_DTYPE_H
#define D9_DTYPE_H

#include <stddef.h>

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

#endif
