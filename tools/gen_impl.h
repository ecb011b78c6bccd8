/* gen_impl.h - what tools/gen.c, gen_write.c and gen_adapter.c share: the
 * generator's tensor list, its resolved parameters, and the functions one
 * file defines for another. Internal to the generator; gen.h is its API.
 *
 *  - gen.c: families, defaults, parameter checks (gen_resolve), the tensor
 *    list (gen_add, gen_list_free), the per-family builders, sharding, and
 *    gen_prepare (resolve, build, shard) behind d9_gen_count;
 *  - gen_write.c: seeded values, the files (temporary name, then rename),
 *    the index and config.json, and d9_gen_write;
 *  - gen_adapter.c: PEFT LoRA/DoRA adapters (d9_gen_write_adapter). */
#ifndef D9_GEN_IMPL_H
#define D9_GEN_IMPL_H

#include <stdint.h>

#include "gen.h"

enum { GEN_CHUNK = 1 << 20 }; /* bytes of tensor data generated (and buffered) at a time */

typedef enum { K_WEIGHT, K_NORM, K_FP8, K_SCALE, K_MXFP4, K_E8M0 } val_kind;

typedef struct gtensor {
  char *name;          /* owned (malloc) */
  d9_dtype dtype;
  int ndim;            /* 1 or 2; up to 4 for gpt_oss's MXFP4 blocks */
  int64_t shape[4];    /* elements */
  val_kind kind;
  uint64_t nbytes;
  int shard;           /* 0-based file index */
  int pair;            /* deepseek_fp8: weight <-> its scale; else -1 */
  int values_of;       /* adapters: 1 + the index of the tensor whose values
                          this one repeats; 0 = its own */
} gtensor;

typedef struct glist {
  gtensor *v;          /* owned */
  int n, cap;
} glist;

/* Parameters with the family defaults resolved. */
typedef struct resolved {
  int fam;
  int64_t L, H, nh, ng, d, I, V, E, b;
  d9_dtype dt;
  int bias, tied, shards;
  uint64_t seed;
} resolved;

/* The MLA sizes deepseek_v3 derives from the parameters (see gen.h). */
typedef struct mla_dims {
  int64_t nope, rope, v, q_lora, kv_lora, moe_i;
} mla_dims;

/* A growable string for the JSON files (sized by tensor count, not data). */
typedef struct sbuf {
  char *s;
  size_t len, cap;
  int oom;
} sbuf;


/* ---- gen.c ---- */
int gen_is_moe(int fam);
int gen_is_fp8(int fam);
/* EINVAL (with what, v and the range in diag) unless lo <= v <= 2^31 - 1. */
int gen_check_dim(const char *what, int64_t v, int64_t lo, d9_diag *diag);
int gen_resolve(const d9_gen_params *p, resolved *r, d9_diag *diag);
void gen_list_free(glist *l);
/* Append a tensor; d1 < 0 makes it 1-D. Returns its index or -errno. */
__attribute__((format(printf, 7, 8)))
int gen_add(glist *l, d9_dtype dt, val_kind k, int64_t d0, int64_t d1, d9_diag *diag,
            const char *fmt, ...);
mla_dims gen_mla_of(const resolved *r);
/* Resolve, build and shard; *sum gets the data bytes. On failure the list
 * is freed. */
int gen_prepare(const d9_gen_params *p, resolved *r, glist *l, uint64_t *sum, d9_diag *diag);

/* ---- gen_write.c ---- */
int gen_make_dirs(const char *dir, d9_diag *diag);
/* dir/name holding text, written under a temporary name and renamed. */
int gen_write_small(const char *dir, const char *name, const char *text, d9_diag *diag);
__attribute__((format(printf, 2, 3)))
void gen_sb_printf(sbuf *b, const char *fmt, ...);
/* Write file fname: tensors [from, to) of the list; buf holds GEN_CHUNK bytes. */
int gen_write_file(const char *dir, const char *fname, const glist *l, int from, int to,
                   const resolved *r, unsigned char *buf, d9_diag *diag);
int gen_write_config(const char *dir, const resolved *r, const d9_gen_params *p,
                     d9_diag *diag);

#endif
