#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct block {
  struct block *next;
  size_t cap, used; /* bytes in data[] */
  _Alignas(16) unsigned char data[];
} block;

struct d9_arena {
  block *head; /* newest block first */
  size_t total;
};

enum { BLOCK_MIN = 64 * 1024 };

d9_arena *d9_arena_create(void) { return calloc(1, sizeof(d9_arena)); }

void d9_arena_destroy(d9_arena *a) {
  if (!a) return;
  for (block *b = a->head, *n; b; b = n) {
    n = b->next;
    free(b);
  }
  free(a);
}

void *d9_arena_alloc(d9_arena *a, size_t size) {
  size = (size + 15) & ~(size_t)15;
  if (size == 0) size = 16;
  if (size > SIZE_MAX / 2) return NULL;
  block *b = a->head;
  if (!b || b->cap - b->used < size) {
    size_t cap = size > BLOCK_MIN ? size : BLOCK_MIN;
    b = malloc(sizeof(block) + cap);
    if (!b) return NULL;
    b->cap = cap;
    b->used = 0;
    /* a big one-off block goes behind the current one so the current
     * block's free space stays usable */
    if (a->head && cap > BLOCK_MIN) {
      b->next = a->head->next;
      a->head->next = b;
    } else {
      b->next = a->head;
      a->head = b;
    }
  }
  void *p = b->data + b->used;
  b->used += size;
  a->total += size;
  memset(p, 0, size);
  return p;
}

void *d9_arena_calloc(d9_arena *a, size_t n, size_t size) {
  if (size && n > SIZE_MAX / size) return NULL;
  return d9_arena_alloc(a, n * size);
}

char *d9_arena_strndup(d9_arena *a, const char *s, size_t len) {
  if (len == SIZE_MAX) return NULL;
  char *p = d9_arena_alloc(a, len + 1);
  if (p) memcpy(p, s, len);
  return p;
}

char *d9_arena_strdup(d9_arena *a, const char *s) {
  return d9_arena_strndup(a, s, strlen(s));
}

char *d9_arena_printf(d9_arena *a, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *p = n < 0 ? NULL : d9_arena_alloc(a, (size_t)n + 1);
  if (p) vsnprintf(p, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return p;
}

size_t d9_arena_used(const d9_arena *a) { return a->total; }
