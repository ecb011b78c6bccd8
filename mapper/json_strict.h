/* json_strict.h - parse untrusted JSON (headers, index files, specs,
 * config.json) with the checks cJSON leaves out. */
#ifndef D9_JSON_STRICT_H
#define D9_JSON_STRICT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "diag.h"

/* Errors in the text say where: "WHAT: REASON at byte N (line L, column C)",
 * lines and columns counted from 1, columns in bytes. */

/* Line and column (1-based, columns in bytes) of offset at in text. */
void d9_json_line_col(const char *text, size_t at, size_t *line, size_t *col);

/* Parse buf[0..len) as one JSON value: valid UTF-8 throughout (no
 * overlong forms, no surrogates, nothing above U+10FFFF), no NUL byte
 * inside the text, nesting depth at most max_depth (checked before cJSON
 * sees the text, so no deep recursion), no duplicate keys in any object,
 * string escapes valid (\u escapes that decode to NUL or to unpaired
 * surrogates are rejected), and after the value only whitespace (or, if
 * spaces_only_after is set, only 0x20). `what` names the source in
 * messages ("config.json", "spec.json: ..."). Returns the cJSON tree (free
 * with cJSON_Delete) or NULL with diag set. */
cJSON *d9_json_parse(const char *buf, size_t len, int max_depth,
                     int spaces_only_after, const char *what, d9_diag *diag);

/* d9_json_parse with the error code: 0 and the tree in *out (free with
 * cJSON_Delete), -EINVAL (the text breaks a rule) or -ENOMEM (cJSON ran out
 * of memory building the tree), with diag set and *out NULL. */
int d9_json_read(const char *buf, size_t len, int max_depth,
                 int spaces_only_after, const char *what, cJSON **out,
                 d9_diag *diag);

/* What d9_json_check counts while it reads. */
typedef struct d9_json_shape {
  size_t top_members;   /* members of the top-level object (0 if not one) */
  size_t top_key_bytes; /* bytes of their keys as written, quotes excluded */
} d9_json_shape;

/* The text checks of d9_json_parse (UTF-8, NUL, grammar, escapes, depth,
 * what follows the value) without building anything: no allocation but
 * max_depth + 1 bytes. Duplicate keys and the exactness of numbers are left
 * to the caller, which reads the text itself (st_parse.c). Returns 0 with
 * *shape filled (shape may be NULL), -EINVAL or -ENOMEM with diag set. */
int d9_json_check(const char *buf, size_t len, int max_depth,
                  int spaces_only_after, const char *what, d9_json_shape *shape,
                  d9_diag *diag);

/* Read a JSON number that must be an integer in [lo, hi] (hi <= 2^53),
 * written as one (no '.', no exponent: "1.0" and "1e3" are refused, as the
 * reference safetensors parser does). Returns 0, or -EINVAL when v is not
 * a number, is not written as an integer, or is out of range. Does not write diag: callers phrase the message. */
int d9_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out);

/* Why d9_json_int refuses v, for the caller's message ("is not a number",
 * "is beyond 2^53 ...", "is not written as an integer ...", "5 is outside
 * [0, 4]" - formatted into buf[cap]), or NULL when it accepts it. */
const char *d9_json_int_why(const cJSON *v, int64_t lo, int64_t hi,
                            char *buf, size_t cap);

/* Read a whole regular file (at most max bytes) into a malloc'd,
 * NUL-terminated buffer. dirfd/relative path as for openat(2); the open is
 * O_NONBLOCK|O_NOFOLLOW-free (symlinks are resolved by the caller's checks)
 * and the file must be regular. Returns 0 or -errno with diag set. */
int d9_read_small_file(int dirfd, const char *path, size_t max, char **out,
                       size_t *out_len, d9_diag *diag);

#endif
