/* json_mutate.h - structure-aware mutation of JSON inputs for the libFuzzer
 * targets (their LLVMFuzzerCustomMutator). Byte-level mutation rarely keeps
 * JSON valid and never reaches the limits that matter (64 step inputs, 8
 * dims, thousands of tensors, names near 1024 bytes, 8 captures, integers
 * near 2^53 and 2^63). This mutator parses the input with cJSON, applies one
 * to three tree mutations chosen from:
 *   - grow an array or object to a count near a limit (2, 7..9, 63..65,
 *     255..257, 300, 1000, 4096) by cloning its members (object members get
 *     new keys, or, once in a while, the same key: repeated names);
 *   - shrink an array or object (to 0, 1 or half);
 *   - a number or any leaf replaced by a boundary literal written raw
 *     (2^53 +- 1, 2^63, 2^64, -1, 1e308, 8, 9, 64, 65, ...);
 *   - a string made long (lengths around 32, 120, 1024, 4096, 65536);
 *   - a string replaced by a capture pattern ("{a}{b}...X", "x.{a}.{b*}",
 *     1 to 16 captures, repeated names);
 *   - a key or a string set to a domain name of the target (a tensor, a
 *     shard file, an op name);
 *   - a member duplicated under the same key, a node replaced by a copy of
 *     another, a node deleted;
 *   - the target's own structural mutation (cfg->special);
 * then the target's fixup (cfg->fixup, e.g. contiguous data_offsets) and
 * prints it back. The output is valid JSON unless the input was not; the
 * targets fall back to LLVMFuzzerMutate for a share of the runs, for bytes
 * no tree can express. Only built into the libFuzzer targets. */
#ifndef D9_FUZZ_JSON_MUTATE_H
#define D9_FUZZ_JSON_MUTATE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef struct d9_fz_rng {
  uint64_t s;
} d9_fz_rng;

uint64_t d9_fz_next(d9_fz_rng *r);
static inline uint64_t d9_fz_below(d9_fz_rng *r, uint64_t n) { return n ? d9_fz_next(r) % n : 0; }

/* Counts near the named limits, for growing arrays and objects. */
int d9_fz_limit_count(d9_fz_rng *r);

/* A capture pattern of k captures ("{a}{b}X", "x.{a}.{b}.y", ...). */
cJSON *d9_fz_pattern(d9_fz_rng *r, int k);

typedef struct d9_fz_cfg {
  const char *const *names; /* domain names to plant */
  int nnames;
  /* target-specific mutation of the tree; may replace *root */
  void (*special)(cJSON **root, d9_fz_rng *r, void *ctx);
  /* run after the mutations (e.g. make offsets contiguous); may be NULL */
  void (*fixup)(cJSON *root, d9_fz_rng *r, void *ctx);
  void *ctx;
} d9_fz_cfg;

/* Mutate the JSON text in[0..n) into out (at most cap bytes). Returns the
 * output length, or 0 when the input is not JSON or the output would not
 * fit (the caller then mutates bytes). */
size_t d9_fz_mutate(const uint8_t *in, size_t n, uint8_t *out, size_t cap, unsigned seed,
                    const d9_fz_cfg *cfg);

/* Bytes of it printed unformatted. */
size_t d9_fz_printed_size(const cJSON *it);

/* The nodes of a tree in pre-order (malloc'd, *n of them; free it). */
cJSON **d9_fz_nodes(cJSON *root, size_t *n);

#endif
