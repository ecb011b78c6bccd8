#include "diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int d9_diag_fail(d9_diag *d, int err, const char *fmt, ...) {
  if (d && !d->set) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    for (char *p = d->msg; *p; p++)
      if (*p == '\n' || *p == '\r') *p = ' ';
    d->set = 1;
    d->err = err;
  }
  return -err;
}

void d9_diag_prefix(d9_diag *d, const char *fmt, ...) {
  if (!d || !d->set) return;
  char pre[D9_DIAG_MAX], old[D9_DIAG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, d->msg, sizeof old);
  snprintf(d->msg, sizeof d->msg, "%s: %s", pre, old);
  for (char *p = d->msg; *p; p++) /* one line, as in d9_diag_fail */
    if (*p == '\n' || *p == '\r') *p = ' ';
}

int d9_diag_errno(d9_diag *d, int err, const char *what) {
  char m[128];
  snprintf(m, sizeof m, "%s", strerror(err));
  if (m[0] >= 'A' && m[0] <= 'Z') m[0] = (char)(m[0] - 'A' + 'a');
  return d9_diag_fail(d, err, "%s: %s", what, m);
}

void d9_diag_clear(d9_diag *d) {
  if (d) {
    d->set = 0;
    d->msg[0] = 0;
  }
}

void d9_diag_show(char *dst, size_t cap, const char *s) {
  size_t o = 0, i = 0;
  for (; s[i] && i < D9_DIAG_SHOW_MAX && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      dst[o++] = '\\';
      dst[o++] = 'x';
      dst[o++] = hex[c >> 4];
      dst[o++] = hex[c & 15];
    } else {
      dst[o++] = (char)c;
    }
  }
  if (s[i]) { /* cut: drop a partial UTF-8 sequence, then mark the cut */
    while (o > 0 && ((unsigned char)dst[o - 1] & 0xC0) == 0x80) o--;
    if (o > 0 && ((unsigned char)dst[o - 1] & 0xC0) == 0xC0) o--;
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = 0;
}
