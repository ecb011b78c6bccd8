/* arena.h - objects that live as long as a mount come from one arena and
 * die together. Not thread-safe: arenas are filled at mount time only. */
#ifndef D9_ARENA_H
#define D9_ARENA_H

#include <stddef.h>

typedef struct d9_arena d9_arena;

d9_arena *d9_arena_create(void);
void d9_arena_destroy(d9_arena *a); /* accepts NULL */
/* Zeroed, 16-byte aligned memory, or NULL on overflow / out of memory. */
void *d9_arena_alloc(d9_arena *a, size_t size);
/* n * size bytes with checked multiplication; NULL on overflow. */
void *d9_arena_calloc(d9_arena *a, size_t n, size_t size);
/* Copy of s[0..len) plus a NUL; NULL on failure. */
char *d9_arena_strndup(d9_arena *a, const char *s, size_t len);
char *d9_arena_strdup(d9_arena *a, const char *s);
/* printf into the arena. */
char *d9_arena_printf(d9_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Total bytes handed out (for the memory figures). */
size_t d9_arena_used(const d9_arena *a);

#endif
