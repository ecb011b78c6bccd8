/* pattern.h - tensor name patterns with named captures.
 *
 *   model.layers.{L}.self_attn.q_proj.weight
 *
 * `{NAME}` captures a non-empty run of characters without '.', so
 * `{L}` matches one path component ("0", "17", "w1"). `{NAME*}` captures
 * any non-empty string, dots included ("{rest*}" matches
 * "model.layers.0.mlp.up_proj.weight"). Everything else is literal; `{{`
 * and `}}` stand for literal braces. Capture names are [A-Za-z_][A-Za-z0-9_]*.
 * A name used twice in one pattern must capture the same text both times.
 * At most D9_MAX_ANY_CAPS {NAME*} captures per pattern.
 *
 * Matching is a depth-first search ({NAME} tries its shortest text first,
 * {NAME*} its longest) whose first success gives the captures; failed
 * states are memoised, so a name of n bytes costs O(D9_MAX_CAPS * n^2)
 * steps when no name repeats, whatever the captures (see pattern.c).
 */
#ifndef D9_PATTERN_H
#define D9_PATTERN_H

#include <stddef.h>
#include <stdint.h>

#include "diag.h"

#define D9_MAX_CAPS 8
#define D9_MAX_ANY_CAPS 2 /* {NAME*} captures per pattern */
#define D9_CAP_NAME_MAX 32 /* bytes, including the NUL, of a capture name */
#define D9_NAME_MAX 1024 /* bytes, including the NUL, of any tensor name we build */

typedef struct d9_caps {
  int n;
  struct {
    char name[D9_CAP_NAME_MAX];
    const char *val; /* borrowed from the matched subject */
    size_t len;
  } c[D9_MAX_CAPS];
} d9_caps;

/* Check the syntax of pat. Returns 0 or -EINVAL with diag naming `where`. */
int d9_pattern_check(const char *pat, const char *where, d9_diag *diag);

/* Match subject s against pat. Captures already in *caps must match the
 * same text again (so a second input pattern can be matched consistently);
 * new ones are appended. Returns 1 on a match (caps extended), 0 otherwise
 * (caps unchanged). pat must have passed d9_pattern_check. */
int d9_pattern_match(const char *pat, const char *s, d9_caps *caps);

/* d9_pattern_match that also adds the steps it took to *steps (a test
 * hook: the bound on the matching cost is asserted through it). */
int d9_pattern_match_counted(const char *pat, const char *s, d9_caps *caps,
                             uint64_t *steps);

/* Write pat with its captures substituted into out (cap bytes). Returns the
 * length, -ENOENT if pat uses a capture not in caps (its name is then
 * copied, NUL-terminated, into missing[D9_CAP_NAME_MAX] when missing is not
 * NULL), or -ENAMETOOLONG. */
int d9_pattern_fill(const char *pat, const d9_caps *caps, char *out,
                    size_t cap, char *missing);

/* 1 if pat has no captures (a literal name). */
int d9_pattern_is_literal(const char *pat);

/* Value of capture `name` in caps (NULL if absent); *len its length. */
const char *d9_caps_get(const d9_caps *caps, const char *name, size_t *len);

#endif
