/* config_patch.h - a spec's "config" patch applied to config.json as an
 * edit of its text, and taken back under --reverse.
 *
 *   "config": {"set": {"torch_dtype": "bfloat16"}, "delete": ["quantization_config"]}
 *
 * The served config.json is the source's bytes with only the changed
 * members edited: a replaced value is spliced into its old value's place; a
 * deleted member goes with its comma and the whitespace before it; a new
 * member is appended after the last one, written with the file's own
 * separator and indentation (",\n  \"key\": value" for a two-space file).
 * Untouched values keep their bytes, so numbers stay exactly as written
 * ("rope_theta": 10000.0 stays 10000.0). A new value is the spec's text
 * of it, as written there.
 *
 * "torch_dtype" and "dtype" (as transformers v5 writes it) are one setting
 * under two names: setting either one (and not the other) replaces
 * whichever of the two config.json has, and adds the named one only when
 * config.json has neither.
 *
 * The last member appended is the undo record, D9_CONFIG_UNDO_KEY:
 *   {"removed": {key: old value, ...}, "replaced": {key: old value, ...},
 *    "added": [key, ...],
 *    "layout": {key: {"after": prev key, "lead": ",\n  ", "head": "\"key\": "}
 *               | {"before": next key, "head": ..., "trail": ",\n  "}, ...}}
 * Old values are copied byte for byte; "layout" holds the bytes around each
 * removed member and its neighbour, so that --reverse puts it back where it
 * was: the original file comes back byte for byte (when no member is left,
 * "inner" holds the bytes between the braces). A record without
 * "layout" (written by an older d9dfs) still restores every value; its
 * removed members are then appended at the end. A config patched twice
 * (converted twice) carries the first record as an ordinary removed
 * member of the second.
 */
#ifndef D9_CONFIG_PATCH_H
#define D9_CONFIG_PATCH_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "catalog.h"
#include "diag.h"
#include "spec.h"

#define D9_CONFIG_UNDO_KEY "_d9dfs_config_patch"

/* Keep the text of each "config"."set" value of the spec text[0..len) that
 * s was parsed from (s->config_set_raw, arena-owned), so that a patch
 * writes numbers exactly as the spec does ("rope_theta": 500000.0). 0 or
 * -ENOMEM; text that cannot be scanned leaves the values to be printed. */
int d9_config_set_raw(d9_spec *s, const char *text, size_t len, d9_diag *diag);

/* config.json of c (c->config_text, c->config_len; c->config its parse)
 * with s's patch applied: a malloc'd, NUL-terminated text in *out (*len
 * bytes, the NUL not counted; caller frees). Returns 0, -ENOMEM, or
 * -EINVAL when the text is not a JSON object (diag set). */
int d9_spec_apply_config(const d9_spec *s, const d9_catalog *c, char **out, size_t *len,
                         d9_diag *diag);

/* The original of a patched config text: 1 with *out (malloc'd,
 * NUL-terminated, *len bytes) the text before the patch, 0 (*out NULL)
 * when text carries no undo record (or one that is not an object), -EINVAL
 * when the record is malformed, or -ENOMEM. */
int d9_spec_undo_config(const char *text, size_t n, char **out, size_t *len);

/* --reverse on a tree whose config.json d9dfs patched: replace c's config
 * text and tree by the original (params are then read from it, and it is
 * what the tree serves). 0 when there is nothing to undo or it was undone;
 * -EINVAL or -ENOMEM with diag set. */
int d9_config_restore(d9_catalog *c, d9_diag *diag);

#endif
