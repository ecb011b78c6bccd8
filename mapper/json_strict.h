/* json_strict.h - parse untrusted JSON (headers, index files, specs,
 * config.json) with the checks cJSON leaves out. */
#ifndef D9_JSON_STRICT_H
#define D9_JSON_STRICT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "diag.h"

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

/* Read a JSON number that must be an integer in [lo, hi] (hi <= 2^53),
 * written as one (no '.', no exponent: "1.0" and "1e3" are refused, as the
 * reference safetensors parser does). Returns 0, or -EINVAL when v is not
 * a number, is not written as an integer, or is out of range. Does not write diag: callers phrase the message. */
int d9_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out);

/* Read a whole regular file (at most max bytes) into a malloc'd,
 * NUL-terminated buffer. dirfd/relative path as for openat(2); the open is
 * O_NONBLOCK|O_NOFOLLOW-free (symlinks are resolved by the caller's checks)
 * and the file must be regular. Returns 0 or -errno with diag set. */
int d9_read_small_file(int dirfd, const char *path, size_t max, char **out,
                       size_t *out_len, d9_diag *diag);

#endif
