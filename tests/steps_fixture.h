/* steps_fixture.h - what the test_steps_*.c files share: trees of every
 * tensor of a set of safetensors files, the fixture (a generated llama
 * checkpoint, specs written at test time, mounts and conversions), and
 * naive references of the documented formulas computed over whole tensors
 * by index arithmetic. Test-only; cmocka assertions inside. */
#ifndef D9_STEPS_FIXTURE_H
#define D9_STEPS_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/kernels.h"
#include "mapper/node.h"
#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

typedef struct tens {
  const char *name; /* tree arena */
  d9_dtype dt;
  int nd;
  int64_t sh[D9_MAX_DIMS];
  int64_t numel;
  const unsigned char *p; /* into the file bytes; any alignment */
  uint64_t nbytes;
} tens;

enum { TREE_FILES = 256, TREE_TENSORS = 4096 };

typedef struct tree {
  int nf;
  char *fname[TREE_FILES];
  unsigned char *data[TREE_FILES];
  uint64_t len[TREE_FILES];
  int nt;
  tens t[TREE_TENSORS];
  d9_arena *a;
  const unsigned char *config; /* config.json bytes or NULL */
  uint64_t config_len;
} tree;

typedef struct fixture {
  char *dir;   /* scratch root for this test group */
  char llama[4200]; /* llama, F32, L=2 H=30 nh=6 ng=2 d=10 I=21 V=37, 2 shards */
  tree *src;   /* its tensors */
  int seq;     /* for unique names under dir */
} fixture;

typedef struct ref {
  d9_dtype dt;
  int nd;
  int64_t sh[D9_MAX_DIMS];
  int64_t numel;
  unsigned char *b;
} ref;

tree *tree_new(void);
void tree_free(tree *tr);
const tens *tree_get(const tree *tr, const char *name);
const tens *must(const tree *tr, const char *name);
void tree_add(tree *tr, const char *name, unsigned char *data, uint64_t len);
tree *tree_from_dir(const char *dir);
tree *tree_from_mount(d9_mount *m);
char *spec_write(fixture *fx, const char *text);
char *work_dir(fixture *fx, const char *what);
d9_mount *try_mount(const char *src, const char *spec, int reverse, int lenient,
                           uint64_t shard, d9_diag *diag);
void expect_refused(fixture *fx, int reverse, const char *want1, const char *want2,
                           const char *spec_text);
d9_mount *must_mount(const char *src, const char *spec, int reverse, uint64_t shard);
void convert_to(d9_mount *m, const char *dir);
char *forward_dir(fixture *fx, const char *src, const char *spec, uint64_t shard);
d9_mount *reverse_mount(fixture *fx, const char *src, const char *spec, tree **fwd);
int same_tensors(const tree *a, const tree *b, char *why, size_t n);
void assert_same_tensors(const tree *a, const tree *b);
void assert_lossless(fixture *fx, const char *src, const tree *st, const char *spec);
char *gen_ckpt(fixture *fx, d9_gen_params *p);
int steps_setup(void **state);
int steps_teardown(void **state);
size_t es_of(d9_dtype t);
ref *ref_new(d9_dtype dt, int nd, const int64_t *sh);
void ref_free(ref *r);
ref *ref_of(const tens *t);
ref *ref_dup(const ref *x);
void unravel(int64_t i, const int64_t *sh, int nd, int64_t *ix);
int64_t ravel(const int64_t *ix, const int64_t *sh, int nd);
void copy_el(ref *dst, int64_t di, const unsigned char *src, int64_t si);
float f32_at(const void *p, int64_t i);
ref *ref_reshape(ref *x, int nd, const int64_t *sh);
ref *ref_permute(ref *x, const int *perm);
ref *ref_t2(ref *x);
ref *ref_slice(const ref *x, int dim, int64_t start, int64_t len);
ref *ref_concat(ref *const *in, int n, int dim);
ref *ref_stack(ref *const *in, int n, int dim);
ref *ref_interleave(ref *const *in, int n, int64_t g);
ref *ref_deinterleave(const ref *x, int parts, int64_t g, int p);
ref *ref_pad(ref *x, int64_t rows);
ref *ref_rope(ref *x, int64_t nh, int half);
float to_f32(const unsigned char *p, d9_dtype t);
void from_f32(unsigned char *p, d9_dtype t, float f);
ref *ref_cast(ref *x, d9_dtype to);
ref *ref_affine(ref *x, float a, float b);
float e4m3_dec(uint8_t v);
ref *ref_dequant(const tens *w, const tens *s, int64_t b0, int64_t b1);
void expect(const tree *tr, const char *name, ref *r);
ref *src_ref(const tree *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *nm(char *buf, const char *fmt, int L);
char *gen_fp8(fixture *fx, tree **st);
char *gen_mixtral(fixture *fx, int64_t experts, tree **st);
extern const char tied_spec[];
char *gen_tied(fixture *fx, int tied, tree **st);

#endif
