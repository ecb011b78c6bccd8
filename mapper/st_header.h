/* st_header.h - the safetensors file format, parsed strictly and written
 * as the reference writer does.
 *
 * A safetensors file is:
 *   bytes [0, 8)        N, the header length, unsigned 64-bit little-endian
 *   bytes [8, 8+N)      a UTF-8 JSON object (the header), possibly padded
 *                       with trailing spaces (0x20)
 *   bytes [8+N, end)    the data section
 * The header maps tensor names to
 *   {"dtype": "BF16", "shape": [4096, 1024], "data_offsets": [begin, end]}
 * with offsets relative to the data section, plus an optional
 * "__metadata__" object whose values are all strings.
 *
 * Rules enforced (those of the reference implementation, and more):
 *   - the file is at least 8 bytes; N <= D9_ST_HEADER_MAX (100 MB) and
 *     N <= file size - 8 (checked by subtraction);
 *   - the header is valid UTF-8, is one JSON object, nesting depth bounded,
 *     nothing but spaces after it; no duplicate keys at any level;
 *   - names are non-empty, contain no NUL; "__metadata__" is a string->string
 *     map;
 *   - a tensor entry has exactly the keys dtype, shape, data_offsets;
 *   - dtype is one of the known names (case-sensitive);
 *   - shape is an array (at most D9_MAX_DIMS) of integers in [0, 2^53];
 *   - element count and byte length use checked multiplication;
 *   - data_offsets is two integers, begin <= end, end - begin = byte length;
 *   - sorted by begin, offsets start at 0 and are strictly contiguous (no
 *     gap, overlap or alias between non-empty tensors), and the last end
 *     equals the data section length (no trailing bytes).
 */
#ifndef D9_ST_HEADER_H
#define D9_ST_HEADER_H

#include <stdint.h>

#include "../kernels/dtype.h"
#include "arena.h"
#include "diag.h"

#define D9_MAX_DIMS 8
#define D9_ST_HEADER_MAX (100u * 1000u * 1000u) /* bytes */
#define D9_JSON_MAX_DEPTH 64
#define D9_ST_META_MIB_DEFAULT 512 /* header metadata limit of a mount, MiB */

typedef struct d9_st_tensor {
  const char *name;          /* arena-owned, NUL-terminated, no NUL inside */
  d9_dtype dtype;
  int ndim;
  int64_t shape[D9_MAX_DIMS]; /* elements per dim */
  uint64_t begin, end;       /* bytes, relative to the data section */
} d9_st_tensor;

typedef struct d9_st_header {
  uint64_t header_len;       /* N: bytes of JSON, padding included */
  uint64_t data_start;       /* 8 + N: file offset of the data section */
  int ntensors;
  d9_st_tensor *tensors;     /* arena-owned, in header (JSON) order */
  int nmeta;
  const char **meta_keys, **meta_values; /* arena-owned */
} d9_st_header;

/* Parse the header from the first 8 bytes `prefix` (already read) and the
 * JSON bytes `json` of length header_len, for a file of `file_size` bytes.
 * Two-step use: call d9_st_header_len() on the 8-byte prefix to learn N
 * (validated against file_size), read N bytes, then d9_st_parse().
 * `what` names the file in messages. All output memory comes from `a`;
 * no JSON tree is built (st_parse.c). Returns 0, or -EINVAL (-ENOMEM) with
 * diag set. */
int d9_st_header_len(const unsigned char prefix[8], uint64_t file_size,
                     const char *what, uint64_t *header_len, d9_diag *diag);
int d9_st_parse(const char *json, uint64_t header_len, uint64_t file_size,
                const char *what, d9_arena *a, d9_st_header *out,
                d9_diag *diag);

/* A bound on header metadata across the headers of one mount. A header is
 * charged its text (held while it is read), its tensor table, names and
 * metadata strings, one int per tensor of sort scratch, and per_tensor
 * bytes per tensor for the caller's own table; what stays after the parse
 * (all but the text and the scratch) adds to used. */
typedef struct d9_st_budget {
  uint64_t limit;      /* bytes; 0: no limit */
  uint64_t used;       /* bytes kept by the headers parsed so far (in/out) */
  uint64_t per_tensor; /* bytes the caller adds per tensor */
  const char *option;  /* how to raise the limit, named in the refusal */
} d9_st_budget;

/* d9_st_parse within a budget (NULL: none). Over it: -EFBIG, diag
 * "WHAT: header metadata needs N MiB, over the limit of M MiB (OPTION)",
 * refused before the table is built when the count of tensors shows it. */
int d9_st_parse_budget(const char *json, uint64_t header_len,
                       uint64_t file_size, const char *what, d9_arena *a,
                       d9_st_budget *budget, d9_st_header *out, d9_diag *diag);

/* Writer. Entries are laid out in the order given, contiguous from 0.
 * Emits "__metadata__" first ({"format":"pt"} plus any extra pairs), then
 * the tensors in order; pads the JSON with spaces to a multiple of 8.
 * On success *out is a malloc'd buffer holding the 8-byte length followed by
 * the JSON (the caller frees it), *out_len its size, and each
 * tensors[i].begin/end is set. Returns 0, -EINVAL (bad dtype/shape/overflow)
 * or -ENOMEM. */
int d9_st_write_header(d9_st_tensor *tensors, int n, const char **meta_keys,
                       const char **meta_values, int nmeta,
                       unsigned char **out, uint64_t *out_len);

/* Checked helpers used across the mapper. Return 0, or -EOVERFLOW. */
int d9_st_numel(const int64_t *shape, int ndim, int64_t *numel);
int d9_st_nbytes(const int64_t *shape, int ndim, d9_dtype t, uint64_t *nbytes);

#endif
