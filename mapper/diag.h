/* diag.h - caller-owned diagnostics.
 *
 * Every function that can fail on outside data takes a d9_diag * (may be
 * NULL) and, on failure, writes one line into it: lowercase, no full stop,
 * naming the file / tensor / spec location and the reason, e.g.
 *   "model-00002.safetensors: tensor 'lm_head.weight': data_offsets [0, 96)
 *    overlap the previous tensor"
 * The first error written wins; later calls do not overwrite it, so the
 * innermost, most specific message survives while callers unwind.
 */
#ifndef D9_DIAG_H
#define D9_DIAG_H

#include <stddef.h>

#define D9_DIAG_MAX 1024

typedef struct d9_diag {
  int set;                /* 1 once msg holds an error */
  int err;                /* the positive errno msg was written with (ENOMEM stays ENOMEM) */
  char msg[D9_DIAG_MAX];  /* NUL-terminated, one line */
} d9_diag;

/* Record a formatted message unless one is already set. Returns -err
 * (err is a positive errno value) so callers can `return d9_diag_fail(...)`. */
int d9_diag_fail(d9_diag *d, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with "prefix: " (for adding the file name on
 * the way out). No-op if nothing is set. */
void d9_diag_prefix(d9_diag *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void d9_diag_clear(d9_diag *d);

/* Copy outside text s (a tensor name, a key) into dst for a message:
 * control bytes as \xNN, at most D9_DIAG_SHOW_MAX bytes of s, cut on a
 * UTF-8 character boundary and marked "...". Always NUL-terminates. */
#define D9_DIAG_SHOW_MAX 120
void d9_diag_show(char *dst, size_t cap, const char *s);

/* "what: no such file or directory" - strerror(err) lowercased, as the
 * message style asks. Returns -err. */
int d9_diag_errno(d9_diag *d, int err, const char *what);

#endif
