/* test_steps.c - every step op of the spec language (docs/spec.md), driven
 * through a spec written at test time, on generated checkpoints (F32 so
 * values compare easily; odd, non-power-of-two shapes), compared byte for
 * byte with naive references computed here from the documented formulas by
 * index arithmetic over whole tensors. Each op with an inverse is also run
 * forward, written out, and mounted again with --reverse (opts.reverse = 1):
 * lossless ops must give the source tensors back byte for byte; lossy ones
 * are checked against the formula of their inverse and listed as lossy.
 * Rule keys (over, unstack, exclude, tied, required, ignore), config
 * patches and their undo record, the validation report and the laziness
 * contract (random byte ranges == slices of the whole file) are covered
 * too.
 *
 * Tests whose name starts with "regression_" document a defect found while
 * writing this file: they state the expected behaviour and fail until the
 * defect is fixed (see the comment above each). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "kernels/kernels.h"
#include "mapper/node.h"
#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

/* ---- trees: every tensor of a set of safetensors files ---- */

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

static tree *tree_new(void) {
  tree *tr = calloc(1, sizeof *tr);
  assert_non_null(tr);
  tr->a = d9_arena_create();
  assert_non_null(tr->a);
  return tr;
}

static void tree_free(tree *tr) {
  if (!tr) return;
  for (int i = 0; i < tr->nf; i++) free(tr->fname[i]), free(tr->data[i]);
  d9_arena_destroy(tr->a);
  free(tr);
}

static const tens *tree_get(const tree *tr, const char *name) {
  for (int i = 0; i < tr->nt; i++)
    if (!strcmp(tr->t[i].name, name)) return &tr->t[i];
  return NULL;
}

static const tens *must(const tree *tr, const char *name) {
  const tens *t = tree_get(tr, name);
  if (!t) fail_msg("no tensor '%s' in the tree", name);
  return t;
}

/* Takes ownership of data. */
static void tree_add(tree *tr, const char *name, unsigned char *data, uint64_t len) {
  assert_true(tr->nf < TREE_FILES);
  int f = tr->nf++;
  tr->fname[f] = strdup(name);
  tr->data[f] = data;
  tr->len[f] = len;
  if (!strcmp(name, "config.json")) tr->config = data, tr->config_len = len;
  size_t l = strlen(name);
  if (l < 12 || strcmp(name + l - 12, ".safetensors")) return;
  uint64_t hl;
  d9_st_header h;
  d9_diag diag = {0};
  assert_true(len >= 8);
  int rc = d9_st_header_len(data, len, name, &hl, &diag);
  if (!rc) rc = d9_st_parse((const char *)data + 8, hl, len, name, tr->a, &h, &diag);
  if (rc) fail_msg("%s: %s", name, diag.msg);
  for (int i = 0; i < h.ntensors; i++) {
    const d9_st_tensor *s = &h.tensors[i];
    if (tree_get(tr, s->name)) fail_msg("tensor '%s' appears twice in the tree", s->name);
    assert_true(tr->nt < TREE_TENSORS);
    tens *t = &tr->t[tr->nt++];
    t->name = s->name;
    t->dt = s->dtype;
    t->nd = s->ndim;
    memcpy(t->sh, s->shape, sizeof t->sh);
    t->numel = 1;
    for (int k = 0; k < t->nd; k++) t->numel *= t->sh[k];
    t->p = data + h.data_start + s->begin;
    t->nbytes = s->end - s->begin;
  }
}

static tree *tree_from_dir(const char *dir) {
  tree *tr = tree_new();
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)l + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)l, f), (size_t)l);
    fclose(f);
    tree_add(tr, de->d_name, b, (uint64_t)l);
  }
  closedir(d);
  return tr;
}

/* Every file node of the mount's root, read whole with d9_mount_read. */
static tree *tree_from_mount(d9_mount *m) {
  tree *tr = tree_new();
  const d9_vnode *root = d9_mount_node(m, 0);
  for (int i = 0; i < root->nchildren; i++) {
    const d9_vnode *v = d9_mount_node(m, root->children[i]);
    if (v->kind != D9_NODE_FILE) continue;
    uint64_t len = 0;
    unsigned char *b = tu_read_node(m, root->children[i], &len);
    if (!b) fail_msg("reading %s failed", v->name);
    tree_add(tr, v->name, b, len);
  }
  return tr;
}

/* ---- fixtures: specs, mounts, conversions ---- */

typedef struct fixture {
  char *dir;   /* scratch root for this test group */
  char llama[4200]; /* llama, F32, L=2 H=30 nh=6 ng=2 d=10 I=21 V=37, 2 shards */
  tree *src;   /* its tensors */
  int seq;     /* for unique names under dir */
} fixture;

/* dir/name with the text written in; single quotes in text become double
 * quotes, so specs read naturally in C. Returns the path (caller frees). */
static char *spec_write(fixture *fx, const char *text) {
  char *path = malloc(4200);
  assert_non_null(path);
  snprintf(path, 4200, "%s/spec%d.json", fx->dir, fx->seq++);
  char *t = strdup(text);
  assert_non_null(t);
  for (char *p = t; *p; p++)
    if (*p == '\'') *p = '"';
  tu_write(path, t);
  free(t);
  return path;
}

static char *work_dir(fixture *fx, const char *what) {
  char *p = malloc(4200);
  assert_non_null(p);
  snprintf(p, 4200, "%s/%s%d", fx->dir, what, fx->seq++);
  return p;
}

static d9_mount *try_mount(const char *src, const char *spec, int reverse, int lenient,
                           uint64_t shard, d9_diag *diag) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .reverse = reverse,
                     .lenient = lenient, .max_shard_size = shard};
  d9_mount *m = NULL;
  int rc = d9_mount_open(&o, &m, diag);
  return rc ? NULL : m;
}

/* A spec that mounting (reverse = 1: mounting --reverse over the llama
 * fixture) must refuse, with a message holding want1 (and want2). */
static void expect_refused(fixture *fx, int reverse, const char *want1, const char *want2,
                           const char *spec_text) {
  char *spec = spec_write(fx, spec_text);
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, reverse, 0, 0, &diag));
  if (!strstr(diag.msg, want1) || (want2 && !strstr(diag.msg, want2)))
    fail_msg("refused with '%s', want '%s'%s%s", diag.msg, want1, want2 ? " and " : "",
             want2 ? want2 : "");
  free(spec);
}

static d9_mount *must_mount(const char *src, const char *spec, int reverse, uint64_t shard) {
  d9_diag diag = {0};
  d9_mount *m = try_mount(src, spec, reverse, 0, shard, &diag);
  if (!m) fail_msg("mount %s%s: %s", spec, reverse ? " (reverse)" : "", diag.msg);
  return m;
}

/* Write every file of m into dir (created), as `d9dfs convert` does. */
static void convert_to(d9_mount *m, const char *dir) {
  assert_int_equal(mkdir(dir, 0755), 0);
  const d9_vnode *root = d9_mount_node(m, 0);
  for (int i = 0; i < root->nchildren; i++) {
    const d9_vnode *v = d9_mount_node(m, root->children[i]);
    if (v->kind != D9_NODE_FILE) continue;
    uint64_t len = 0;
    unsigned char *b = tu_read_node(m, root->children[i], &len);
    if (!b) fail_msg("reading %s failed", v->name);
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, v->name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(b);
  }
}

/* Forward-convert src with spec into a new directory (returned, malloc'd). */
static char *forward_dir(fixture *fx, const char *src, const char *spec, uint64_t shard) {
  d9_mount *m = must_mount(src, spec, 0, shard);
  char *out = work_dir(fx, "fwd");
  convert_to(m, out);
  d9_mount_close(m);
  return out;
}

/* The spec's forward output, mounted with --reverse; *fwd gets the forward
 * tree when not NULL. The caller closes the mount. */
static d9_mount *reverse_mount(fixture *fx, const char *src, const char *spec, tree **fwd) {
  char *out = forward_dir(fx, src, spec, 30000);
  if (fwd) *fwd = tree_from_dir(out);
  d9_mount *r = must_mount(out, spec, 1, 0);
  free(out);
  return r;
}

/* 1 if every tensor of a is in b with the same dtype, shape and bytes, and
 * b has no others; else 0 with the first difference in why. */
static int same_tensors(const tree *a, const tree *b, char *why, size_t n) {
  for (int i = 0; i < a->nt; i++) {
    const tens *x = &a->t[i], *y = tree_get(b, x->name);
    if (!y) return snprintf(why, n, "'%s' did not come back", x->name), 0;
    if (x->dt != y->dt || x->nd != y->nd || memcmp(x->sh, y->sh, sizeof(int64_t) * (size_t)x->nd))
      return snprintf(why, n, "'%s' came back as %s with another shape", x->name,
                      d9_dtype_name(y->dt)), 0;
    if (x->nbytes != y->nbytes || memcmp(x->p, y->p, x->nbytes))
      return snprintf(why, n, "'%s' came back with other bytes", x->name), 0;
  }
  for (int i = 0; i < b->nt; i++)
    if (!tree_get(a, b->t[i].name))
      return snprintf(why, n, "extra tensor '%s' after the round trip", b->t[i].name), 0;
  return 1;
}

static void assert_same_tensors(const tree *a, const tree *b) {
  char why[600];
  if (!same_tensors(a, b, why, sizeof why)) fail_msg("%s", why);
}

/* Forward then reverse gives every source tensor back, byte for byte, and
 * the reversed spec lists no lossy step. */
static void assert_lossless(fixture *fx, const char *src, const tree *st, const char *spec) {
  d9_mount *r = reverse_mount(fx, src, spec, NULL);
  tree *back = tree_from_mount(r);
  assert_int_equal(d9_mount_nlossy(r), 0);
  assert_same_tensors(st, back);
  tree_free(back);
  d9_mount_close(r);
}

static char *gen_ckpt(fixture *fx, d9_gen_params *p) {
  char *path = work_dir(fx, d9_gen_family_name(p->family));
  d9_diag diag = {0};
  int rc = d9_gen_write(path, p, &diag);
  if (rc) fail_msg("gen: %s", diag.msg);
  return path;
}

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  if (!fx) return -1;
  fx->dir = tu_tmpdir();
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 2, p.hidden = 30, p.heads = 6, p.kv_heads = 2, p.head_dim = 10;
  p.intermediate = 21, p.vocab = 37, p.dtype = D9_F32, p.tied = 0, p.shards = 2;
  p.seed = 20240611;
  snprintf(fx->llama, sizeof fx->llama, "%s/llama", fx->dir);
  d9_diag diag = {0};
  if (d9_gen_write(fx->llama, &p, &diag)) {
    fprintf(stderr, "gen: %s\n", diag.msg);
    return -1;
  }
  fx->src = tree_from_dir(fx->llama);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  tree_free(fx->src);
  tu_rmrf(fx->dir);
  free(fx->dir);
  free(fx);
  return 0;
}

/* ---- naive references: whole tensors, index arithmetic ---- */

typedef struct ref {
  d9_dtype dt;
  int nd;
  int64_t sh[D9_MAX_DIMS];
  int64_t numel;
  unsigned char *b;
} ref;

static size_t es_of(d9_dtype t) { return d9_dtype_size(t); }

static ref *ref_new(d9_dtype dt, int nd, const int64_t *sh) {
  ref *r = calloc(1, sizeof *r);
  assert_non_null(r);
  r->dt = dt, r->nd = nd, r->numel = 1;
  for (int k = 0; k < nd; k++) r->sh[k] = sh[k], r->numel *= sh[k];
  r->b = calloc((size_t)r->numel + 1, es_of(dt));
  assert_non_null(r->b);
  return r;
}

static void ref_free(ref *r) {
  if (r) free(r->b), free(r);
}

static ref *ref_of(const tens *t) {
  ref *r = ref_new(t->dt, t->nd, t->sh);
  memcpy(r->b, t->p, t->nbytes);
  return r;
}

static ref *ref_dup(const ref *x) {
  ref *r = ref_new(x->dt, x->nd, x->sh);
  memcpy(r->b, x->b, (size_t)x->numel * es_of(x->dt));
  return r;
}

static void unravel(int64_t i, const int64_t *sh, int nd, int64_t *ix) {
  for (int k = nd - 1; k >= 0; k--) {
    ix[k] = i % sh[k];
    i /= sh[k];
  }
}

static int64_t ravel(const int64_t *ix, const int64_t *sh, int nd) {
  int64_t i = 0;
  for (int k = 0; k < nd; k++) i = i * sh[k] + ix[k];
  return i;
}

static void copy_el(ref *dst, int64_t di, const unsigned char *src, int64_t si) {
  size_t es = es_of(dst->dt);
  memcpy(dst->b + (size_t)di * es, src + (size_t)si * es, es);
}

static float f32_at(const void *p, int64_t i) {
  float f;
  memcpy(&f, (const unsigned char *)p + 4 * i, 4);
  return f;
}

/* Same elements, new shape (reshape, squeeze, unsqueeze). */
static ref *ref_reshape(ref *x, int nd, const int64_t *sh) {
  int64_t n = 1;
  for (int k = 0; k < nd; k++) n *= sh[k];
  assert_int_equal(n, x->numel);
  x->nd = nd;
  memcpy(x->sh, sh, sizeof(int64_t) * (size_t)nd);
  return x;
}

/* out[i_0..i_{n-1}] = x[j] with j[perm[k]] = i_k; consumes x. */
static ref *ref_permute(ref *x, const int *perm) {
  int64_t osh[D9_MAX_DIMS], oi[D9_MAX_DIMS], xi[D9_MAX_DIMS];
  for (int k = 0; k < x->nd; k++) osh[k] = x->sh[perm[k]];
  ref *o = ref_new(x->dt, x->nd, osh);
  for (int64_t i = 0; i < o->numel; i++) {
    unravel(i, osh, o->nd, oi);
    for (int k = 0; k < o->nd; k++) xi[perm[k]] = oi[k];
    copy_el(o, i, x->b, ravel(xi, x->sh, x->nd));
  }
  ref_free(x);
  return o;
}

/* 2-D transpose by the textbook formula: out[j][i] = x[i][j]; consumes x. */
static ref *ref_t2(ref *x) {
  assert_int_equal(x->nd, 2);
  int64_t sh[2] = {x->sh[1], x->sh[0]};
  ref *o = ref_new(x->dt, 2, sh);
  for (int64_t i = 0; i < x->sh[0]; i++)
    for (int64_t j = 0; j < x->sh[1]; j++) copy_el(o, j * sh[1] + i, x->b, i * x->sh[1] + j);
  ref_free(x);
  return o;
}

/* Elements [start, start+len) along dim; does not consume x. */
static ref *ref_slice(const ref *x, int dim, int64_t start, int64_t len) {
  int64_t sh[D9_MAX_DIMS], ix[D9_MAX_DIMS];
  memcpy(sh, x->sh, sizeof sh);
  sh[dim] = len;
  ref *o = ref_new(x->dt, x->nd, sh);
  for (int64_t i = 0; i < o->numel; i++) {
    unravel(i, sh, x->nd, ix);
    ix[dim] += start;
    copy_el(o, i, x->b, ravel(ix, x->sh, x->nd));
  }
  return o;
}

/* Concatenation along dim: out[.., c, ..] = in_k[.., c - cum_k, ..]. */
static ref *ref_concat(ref *const *in, int n, int dim) {
  int64_t sh[D9_MAX_DIMS], ix[D9_MAX_DIMS];
  memcpy(sh, in[0]->sh, sizeof sh);
  sh[dim] = 0;
  for (int k = 0; k < n; k++) sh[dim] += in[k]->sh[dim];
  ref *o = ref_new(in[0]->dt, in[0]->nd, sh);
  for (int64_t i = 0; i < o->numel; i++) {
    unravel(i, sh, o->nd, ix);
    int k = 0;
    while (ix[dim] >= in[k]->sh[dim]) ix[dim] -= in[k++]->sh[dim];
    copy_el(o, i, in[k]->b, ravel(ix, in[k]->sh, in[k]->nd));
  }
  return o;
}

/* Stack along a new dim: out[i with i[dim] = k] = in_k[i without dim]. */
static ref *ref_stack(ref *const *in, int n, int dim) {
  int nd = in[0]->nd + 1;
  int64_t sh[D9_MAX_DIMS], ix[D9_MAX_DIMS], jx[D9_MAX_DIMS];
  for (int k = 0, j = 0; k < nd; k++) sh[k] = k == dim ? n : in[0]->sh[j++];
  ref *o = ref_new(in[0]->dt, nd, sh);
  for (int64_t i = 0; i < o->numel; i++) {
    unravel(i, sh, nd, ix);
    for (int k = 0, j = 0; k < nd; k++)
      if (k != dim) jx[j++] = ix[k];
    copy_el(o, i, in[ix[dim]]->b, ravel(jx, in[0]->sh, in[0]->nd));
  }
  return o;
}

/* Row interleave of n same-shape inputs by groups of g rows: out row r is
 * row (r / (n g)) g + r % g of input (r % (n g)) / g. */
static ref *ref_interleave(ref *const *in, int n, int64_t g) {
  int64_t sh[D9_MAX_DIMS];
  memcpy(sh, in[0]->sh, sizeof sh);
  sh[0] = in[0]->sh[0] * n;
  ref *o = ref_new(in[0]->dt, in[0]->nd, sh);
  int64_t row = o->numel / sh[0];
  for (int64_t r = 0; r < sh[0]; r++) {
    int64_t blk = r / (n * g), part = r % (n * g) / g, src = blk * g + r % g;
    for (int64_t c = 0; c < row; c++) copy_el(o, r * row + c, in[part]->b, src * row + c);
  }
  return o;
}

/* Part p of a deinterleave into `parts` by groups of g: its row r is row
 * (r / g) (parts g) + p g + r % g of x. */
static ref *ref_deinterleave(const ref *x, int parts, int64_t g, int p) {
  int64_t sh[D9_MAX_DIMS];
  memcpy(sh, x->sh, sizeof sh);
  sh[0] = x->sh[0] / parts;
  ref *o = ref_new(x->dt, x->nd, sh);
  int64_t row = o->numel / sh[0];
  for (int64_t r = 0; r < sh[0]; r++) {
    int64_t src = r / g * (parts * g) + p * g + r % g;
    for (int64_t c = 0; c < row; c++) copy_el(o, r * row + c, x->b, src * row + c);
  }
  return o;
}

/* Dim 0 grown to rows with zero elements. Consumes x. */
static ref *ref_pad(ref *x, int64_t rows) {
  int64_t sh[D9_MAX_DIMS];
  memcpy(sh, x->sh, sizeof sh);
  sh[0] = rows;
  ref *o = ref_new(x->dt, x->nd, sh); /* zeroed */
  memcpy(o->b, x->b, (size_t)x->numel * es_of(x->dt));
  ref_free(x);
  return o;
}

/* HF's rotary permutation, per head of d rows (nh heads, C columns):
 * to half:        w.view(nh, d/2, 2, C).transpose(1, 2).reshape(nh*d, C),
 *                 i.e. out row h d + j d/2 + t = in row h d + 2 t + j;
 * to interleaved: the inverse, out row h d + 2 t + j = in row h d + j d/2 + t. */
static ref *ref_rope(ref *x, int64_t nh, int half) {
  ref *o = ref_new(x->dt, x->nd, x->sh);
  int64_t d = x->sh[0] / nh, C = x->numel / x->sh[0];
  for (int64_t h = 0; h < nh; h++)
    for (int64_t t = 0; t < d / 2; t++)
      for (int64_t j = 0; j < 2; j++) {
        int64_t hr = h * d + j * (d / 2) + t, ir = h * d + 2 * t + j;
        int64_t to = half ? hr : ir, from = half ? ir : hr;
        for (int64_t c = 0; c < C; c++) copy_el(o, to * C + c, x->b, from * C + c);
      }
  ref_free(x);
  return o;
}

static float to_f32(const unsigned char *p, d9_dtype t) {
  uint16_t h;
  switch (t) {
    case D9_F32: return f32_at(p, 0);
    case D9_F16: memcpy(&h, p, 2); return d9_f16_to_f32(h);
    case D9_BF16: memcpy(&h, p, 2); return d9_bf16_to_f32(h);
    case D9_F8_E4M3: return d9_e4m3_to_f32(*p);
    case D9_F8_E5M2: return d9_e5m2_to_f32(*p);
    default: fail_msg("not a float dtype"); return 0;
  }
}

static void from_f32(unsigned char *p, d9_dtype t, float f) {
  uint16_t h;
  switch (t) {
    case D9_F32: memcpy(p, &f, 4); break;
    case D9_F16: h = d9_f32_to_f16(f), memcpy(p, &h, 2); break;
    case D9_BF16: h = d9_f32_to_bf16(f), memcpy(p, &h, 2); break;
    case D9_F8_E4M3: *p = d9_f32_to_e4m3(f); break;
    case D9_F8_E5M2: *p = d9_f32_to_e5m2(f); break;
    default: fail_msg("not a float dtype");
  }
}

/* Elementwise cast with the scalar converters (tested in test_kernels
 * against independent references). Consumes x. */
static ref *ref_cast(ref *x, d9_dtype to) {
  ref *o = ref_new(to, x->nd, x->sh);
  size_t ei = es_of(x->dt), eo = es_of(to);
  for (int64_t i = 0; i < x->numel; i++)
    from_f32(o->b + (size_t)i * eo, to, to_f32(x->b + (size_t)i * ei, x->dt));
  ref_free(x);
  return o;
}

/* y = dtype(f32(x) * a + b): one F32 multiply, one F32 add, each rounded
 * (explicit float temporaries, no contraction), then rounded to the dtype.
 * Consumes x. */
static ref *ref_affine(ref *x, float a, float b) {
  ref *o = ref_new(x->dt, x->nd, x->sh);
  size_t es = es_of(x->dt);
  for (int64_t i = 0; i < x->numel; i++) {
    volatile float v = to_f32(x->b + (size_t)i * es, x->dt);
    volatile float t = v * a;
    volatile float y = t + b;
    from_f32(o->b + (size_t)i * es, x->dt, y);
  }
  ref_free(x);
  return o;
}

/* The E4M3 ("fn") decoder, written from the format: 1 sign, 4 exponent
 * bits (bias 7), 3 mantissa bits; exponent 0 is subnormal (m/8 * 2^-6);
 * S.1111.111 is NaN; there is no Inf. */
static float e4m3_dec(uint8_t v) {
  int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
  if (e == 15 && m == 7) return NAN;
  float r = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m, -9);
  return s ? -r : r;
}

/* out[i,j] = f32(w[i,j]) * s[i/b0, j/b1], one F32 multiply. */
static ref *ref_dequant(const tens *w, const tens *s, int64_t b0, int64_t b1) {
  assert_int_equal(w->dt, D9_F8_E4M3);
  assert_int_equal(s->dt, D9_F32);
  ref *o = ref_new(D9_F32, 2, w->sh);
  int64_t N = w->sh[1], sn = s->sh[1];
  for (int64_t i = 0; i < w->sh[0]; i++)
    for (int64_t j = 0; j < N; j++) {
      volatile float q = e4m3_dec(w->p[i * N + j]);
      volatile float sc = f32_at(s->p, (i / b0) * sn + j / b1);
      volatile float y = q * sc;
      memcpy(o->b + 4 * (i * N + j), (const void *)&y, 4);
    }
  return o;
}

/* Compare tensor `name` of tr with r (dtype, shape, bytes); frees r. */
static void expect(const tree *tr, const char *name, ref *r) {
  const tens *t = tree_get(tr, name);
  if (!t) fail_msg("no target '%s'", name);
  if (t->dt != r->dt)
    fail_msg("'%s' is %s, want %s", name, d9_dtype_name(t->dt), d9_dtype_name(r->dt));
  char s1[160], s2[160];
  if (t->nd != r->nd || memcmp(t->sh, r->sh, sizeof(int64_t) * (size_t)t->nd))
    fail_msg("'%s' is %s, want %s", name, d9_shape_str(t->sh, t->nd, s1, sizeof s1),
             d9_shape_str(r->sh, r->nd, s2, sizeof s2));
  size_t es = es_of(r->dt);
  assert_int_equal(t->nbytes, (uint64_t)r->numel * es);
  for (int64_t i = 0; i < r->numel; i++)
    if (memcmp(t->p + (size_t)i * es, r->b + (size_t)i * es, es))
      fail_msg("'%s': element %lld differs from the reference", name, (long long)i);
  ref_free(r);
}

static ref *src_ref(const tree *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ref *src_ref(const tree *st, const char *fmt, ...) {
  char name[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return ref_of(must(st, name));
}

static const char *nm(char *buf, const char *fmt, int L) {
  snprintf(buf, 256, fmt, L);
  return buf;
}

/* ---- transpose, permute, reshape ---- */

static const char transpose_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 't2', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
    "  'steps': [{'op': 'transpose'}], 'output': 't.{L}.o'},\n"
    " {'name': 't3neg', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': ['num_attention_heads', 'head_dim', -1],\n"
    "             'from_shape': [-1, 'hidden_size']},\n"
    "            {'op': 'transpose', 'dim0': -1, 'dim1': -3}], 'output': 't.{L}.q'},\n"
    " {'name': 'p3', 'inputs': 'model.layers.{L}.self_attn.k_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': ['num_key_value_heads', 'head_dim', 'hidden_size'],\n"
    "             'from_shape': ['num_key_value_heads * head_dim', 'hidden_size']},\n"
    "            {'op': 'permute', 'dims': [2, 0, 1]}], 'output': 't.{L}.k'},\n"
    " {'name': 'p4', 'inputs': 'model.layers.{L}.mlp.gate_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': [3, 7, 5, 6], 'from_shape': [21, 30]},\n"
    "            {'op': 'permute', 'dims': [-1, 1, 0, 2]}], 'output': 't.{L}.gate'},\n"
    " {'name': 'p2id', 'inputs': 'model.layers.{L}.mlp.down_proj.weight',\n"
    "  'steps': [{'op': 'permute', 'dims': [0, 1]}, {'op': 'transpose', 'dim0': 1, 'dim1': 0},\n"
    "            {'op': 'transpose', 'dim0': -2, 'dim1': -2}], 'output': 't.{L}.down'}\n"
    "]}\n";

static void test_transpose_permute(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(fx, transpose_spec);
  d9_mount *m = must_mount(fx->llama, spec, 0, 20000);
  tree *out = tree_from_mount(m);
  for (int L = 0; L < 2; L++) {
    char b[256];
    expect(out, nm(b, "t.%d.o", L), ref_t2(src_ref(fx->src, "model.layers.%d.self_attn.o_proj.weight", L)));
    /* q [60, 30] as [6, 10, 30], dims 2 and 0 swapped: out[a][b][c] = x[c][b][a] */
    int64_t s3[3] = {6, 10, 30};
    ref *q = ref_reshape(src_ref(fx->src, "model.layers.%d.self_attn.q_proj.weight", L), 3, s3);
    ref *qt = ref_new(D9_F32, 3, (int64_t[]){30, 10, 6});
    for (int a = 0; a < 30; a++)
      for (int bb = 0; bb < 10; bb++)
        for (int c = 0; c < 6; c++) copy_el(qt, (a * 10 + bb) * 6 + c, q->b, (c * 10 + bb) * 30 + a);
    ref_free(q);
    expect(out, nm(b, "t.%d.q", L), qt);
    int64_t k3[3] = {2, 10, 30}, g4[4] = {3, 7, 5, 6};
    expect(out, nm(b, "t.%d.k", L),
           ref_permute(ref_reshape(src_ref(fx->src, "model.layers.%d.self_attn.k_proj.weight", L), 3, k3),
                       (int[]){2, 0, 1}));
    expect(out, nm(b, "t.%d.gate", L),
           ref_permute(ref_reshape(src_ref(fx->src, "model.layers.%d.mlp.gate_proj.weight", L), 4, g4),
                       (int[]){3, 1, 0, 2}));
    /* identity permute, transpose back, transpose of a dim with itself */
    expect(out, nm(b, "t.%d.down", L), ref_t2(src_ref(fx->src, "model.layers.%d.mlp.down_proj.weight", L)));
  }
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
}

/* ---- squeeze, unsqueeze ---- */

static const char squeeze_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'u0', 'inputs': 'model.layers.{L}.input_layernorm.weight',\n"
    "  'steps': [{'op': 'unsqueeze', 'dim': 0}, {'op': 'unsqueeze', 'dim': -1},\n"
    "            {'op': 'squeeze', 'dim': 0}], 'output': 's.{L}.in'},\n"
    " {'name': 'u1', 'inputs': 'model.layers.{L}.post_attention_layernorm.weight',\n"
    "  'steps': [{'op': 'unsqueeze', 'dim': 1}], 'output': 's.{L}.post'},\n"
    " {'name': 'u2', 'inputs': 'model.norm.weight',\n"
    "  'steps': [{'op': 'unsqueeze', 'dim': 0}, {'op': 'unsqueeze', 'dim': 1}], 'output': 's.norm'},\n"
    " {'name': 'sq', 'inputs': 'model.layers.{L}.self_attn.v_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': [1, 20, 1, 30], 'from_shape': [20, 30]},\n"
    "            {'op': 'squeeze', 'dim': -2}], 'output': 's.{L}.v'}\n"
    "]}\n";

static void expect_view(const tree *out, const char *name, const tens *src, int nd,
                        const int64_t *sh) {
  expect(out, name, ref_reshape(ref_of(src), nd, sh));
}

static void test_squeeze_unsqueeze(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(fx, squeeze_spec);
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256], c[256];
  for (int L = 0; L < 2; L++) {
    expect_view(out, nm(b, "s.%d.in", L), must(fx->src, nm(c, "model.layers.%d.input_layernorm.weight", L)),
                2, (int64_t[]){30, 1});
    expect_view(out, nm(b, "s.%d.post", L),
                must(fx->src, nm(c, "model.layers.%d.post_attention_layernorm.weight", L)), 2,
                (int64_t[]){30, 1});
    expect_view(out, nm(b, "s.%d.v", L), must(fx->src, nm(c, "model.layers.%d.self_attn.v_proj.weight", L)),
                3, (int64_t[]){1, 20, 30});
  }
  expect_view(out, "s.norm", must(fx->src, "model.norm.weight"), 3, (int64_t[]){1, 1, 30});
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
  /* squeezing a dim that is not 1 is refused, naming the step */
  expect_refused(fx, 0, "steps[0]", "not 1",
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
                  " 'inputs': 'model.norm.weight', 'steps': [{'op': 'squeeze', 'dim': 0}],"
                  " 'output': 'x'}]}");
}

/* ---- slice ---- */

static void test_slice(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'sl', 'inputs': 'model.embed_tokens.weight',\n"
          "  'steps': [{'op': 'slice', 'dim': 0, 'start': -10, 'end': -2},\n"
          "            {'op': 'slice', 'dim': -1, 'start': 3, 'end': -4}], 'output': 'emb.sl'},\n"
          " {'name': 'sl2', 'inputs': 'lm_head.weight',\n"
          "  'steps': [{'op': 'slice', 'dim': 1, 'start': 'hidden_size - 5'}], 'output': 'lm.sl'},\n"
          " {'name': 'sl3', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "  'steps': [{'op': 'slice', 'end': 7}], 'output': 'q.{L}.sl'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  ref *e = src_ref(fx->src, "model.embed_tokens.weight"), *r1 = ref_slice(e, 0, 27, 8);
  expect(out, "emb.sl", ref_slice(r1, 1, 3, 23));
  ref_free(r1), ref_free(e);
  e = src_ref(fx->src, "lm_head.weight");
  expect(out, "lm.sl", ref_slice(e, 1, 25, 5));
  ref_free(e);
  for (int L = 0; L < 2; L++) {
    char b[256];
    e = src_ref(fx->src, "model.layers.%d.self_attn.q_proj.weight", L);
    expect(out, nm(b, "q.%d.sl", L), ref_slice(e, 0, 0, 7));
    ref_free(e);
  }
  tree_free(out);
  d9_mount_close(m);
  /* slice drops data: --reverse is refused, naming the step */
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, 1, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "slice drops data and has no inverse"));
  assert_non_null(strstr(diag.msg, "rules[0] (sl).steps[1]")); /* inverted last step first */
  free(spec);
  /* a range outside the dim is refused */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
                        " 'inputs': 'model.norm.weight', 'steps': [{'op': 'slice', 'start': 5,"
                        " 'end': 31}], 'output': 'x'}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "outside"));
  free(spec);
}

/* ---- interleave, deinterleave ---- */

static const char interleave_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'gu', 'inputs': {'g': 'model.layers.{L}.mlp.gate_proj.weight',\n"
    "                           'u': 'model.layers.{L}.mlp.up_proj.weight'},\n"
    "  'steps': [{'op': 'interleave'}], 'output': 'i.{L}.gate_up'},\n"
    " {'name': 'kv', 'inputs': {'k': 'model.layers.{L}.self_attn.k_proj.weight',\n"
    "                           'v': 'model.layers.{L}.self_attn.v_proj.weight'},\n"
    "  'steps': [{'op': 'interleave', 'group': 'head_dim'}], 'output': 'i.{L}.kv'},\n"
    " {'name': 'norms', 'inputs': {'a': 'model.layers.{L}.input_layernorm.weight',\n"
    "                              'b': 'model.layers.{L}.post_attention_layernorm.weight'},\n"
    "  'steps': [{'op': 'interleave', 'group': 3}], 'output': 'i.{L}.norms'},\n"
    " {'name': 'de', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
    "  'steps': [{'op': 'deinterleave', 'parts': 3, 'group': 'head_dim / 5', 'out': ['a', 'b', 'c']}],\n"
    "  'output': {'a': 'i.{L}.qa', 'b': 'i.{L}.qb', 'c': 'i.{L}.qc'}}\n"
    "]}\n";

static void test_interleave(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(fx, interleave_spec);
  d9_mount *m = must_mount(fx->llama, spec, 0, 25000);
  tree *out = tree_from_mount(m);
  for (int L = 0; L < 2; L++) {
    char b[256];
    ref *in[3];
    /* NeMo gate/up: g0, u0, g1, u1, ... */
    in[0] = src_ref(fx->src, "model.layers.%d.mlp.gate_proj.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.mlp.up_proj.weight", L);
    ref *gu = ref_interleave(in, 2, 1);
    for (int64_t r = 0; r < 21; r++) { /* the group-1 formula spelled out */
      assert_memory_equal(gu->b + (2 * r) * 120, in[0]->b + r * 120, 120);
      assert_memory_equal(gu->b + (2 * r + 1) * 120, in[1]->b + r * 120, 120);
    }
    expect(out, nm(b, "i.%d.gate_up", L), gu);
    ref_free(in[0]), ref_free(in[1]);
    /* KV interleave by group d: [k1, v1, k2, v2] */
    in[0] = src_ref(fx->src, "model.layers.%d.self_attn.k_proj.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.self_attn.v_proj.weight", L);
    ref *kv = ref_interleave(in, 2, 10);
    for (int grp = 0; grp < 2; grp++) {
      assert_memory_equal(kv->b + (2 * grp) * 10 * 120, in[0]->b + grp * 10 * 120, 10 * 120);
      assert_memory_equal(kv->b + (2 * grp + 1) * 10 * 120, in[1]->b + grp * 10 * 120, 10 * 120);
    }
    expect(out, nm(b, "i.%d.kv", L), kv);
    ref_free(in[0]), ref_free(in[1]);
    in[0] = src_ref(fx->src, "model.layers.%d.input_layernorm.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.post_attention_layernorm.weight", L);
    expect(out, nm(b, "i.%d.norms", L), ref_interleave(in, 2, 3));
    ref_free(in[0]), ref_free(in[1]);
    ref *q = src_ref(fx->src, "model.layers.%d.self_attn.q_proj.weight", L);
    const char *pn[3] = {"qa", "qb", "qc"};
    for (int p = 0; p < 3; p++) {
      snprintf(b, sizeof b, "i.%d.%s", L, pn[p]);
      expect(out, b, ref_deinterleave(q, 3, 2, p));
    }
    ref_free(q);
  }
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
  /* rows not a multiple of the group are refused */
  expect_refused(fx, 0, "multiple of group", NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
                  " 'inputs': {'g': 'model.layers.{L}.mlp.gate_proj.weight',"
                  " 'u': 'model.layers.{L}.mlp.up_proj.weight'},"
                  " 'steps': [{'op': 'interleave', 'group': 2}], 'output': 'x{L}'}]}");
}

/* ---- stack, unstack ---- */

static const char stack_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'st0', 'inputs': {'k': 'model.layers.{L}.self_attn.k_proj.weight',\n"
    "                            'v': 'model.layers.{L}.self_attn.v_proj.weight'},\n"
    "  'steps': [{'op': 'stack'}], 'output': 'st.{L}.kv'},\n"
    " {'name': 'stn', 'inputs': {'g': 'model.layers.{L}.mlp.gate_proj.weight',\n"
    "                            'u': 'model.layers.{L}.mlp.up_proj.weight'},\n"
    "  'steps': [{'op': 'stack', 'dim': -1}], 'output': 'st.{L}.gu'},\n"
    " {'name': 'st1', 'inputs': {'a': 'model.layers.{L}.input_layernorm.weight',\n"
    "                            'b': 'model.layers.{L}.post_attention_layernorm.weight',\n"
    "                            'c': 'model.norm.weight'},\n"
    "  'steps': [{'op': 'stack', 'dim': 1}], 'output': 'st.{L}.norms'},\n"
    " {'name': 'un0', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': [3, 20, 30], 'from_shape': [60, 30]},\n"
    "            {'op': 'unstack', 'out': ['a', 'b', 'c']}],\n"
    "  'output': {'a': 'un.{L}.qa', 'b': 'un.{L}.qb', 'c': 'un.{L}.qc'}},\n"
    " {'name': 'un1', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': [30, 2, 30], 'from_shape': [30, 60]},\n"
    "            {'op': 'unstack', 'dim': -2, 'out': ['l', 'r']}],\n"
    "  'output': {'l': 'un.{L}.ol', 'r': 'un.{L}.or'}}\n"
    "]}\n";

static void test_stack_unstack(void **state) {
  fixture *fx = *state;
  /* model.norm.weight is used by both layers' st1 instances: pass-through
   * must not see it again, and the reverse must make it once. The reverse
   * of st1 would emit model.norm.weight twice (once per layer), so that
   * rule is checked forward only, in its own spec. */
  char *spec = spec_write(fx, stack_spec);
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  for (int L = 0; L < 2; L++) {
    char b[256];
    ref *in[3];
    in[0] = src_ref(fx->src, "model.layers.%d.self_attn.k_proj.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.self_attn.v_proj.weight", L);
    expect(out, nm(b, "st.%d.kv", L), ref_stack(in, 2, 0));
    ref_free(in[0]), ref_free(in[1]);
    in[0] = src_ref(fx->src, "model.layers.%d.mlp.gate_proj.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.mlp.up_proj.weight", L);
    expect(out, nm(b, "st.%d.gu", L), ref_stack(in, 2, 2));
    ref_free(in[0]), ref_free(in[1]);
    in[0] = src_ref(fx->src, "model.layers.%d.input_layernorm.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.post_attention_layernorm.weight", L);
    in[2] = src_ref(fx->src, "model.norm.weight");
    expect(out, nm(b, "st.%d.norms", L), ref_stack(in, 3, 1));
    ref_free(in[0]), ref_free(in[1]), ref_free(in[2]);
    /* unstack dim 0 of q as [3, 20, 30]: part k = rows [20k, 20k+20) */
    ref *q = src_ref(fx->src, "model.layers.%d.self_attn.q_proj.weight", L);
    const char *pn[3] = {"qa", "qb", "qc"};
    for (int k = 0; k < 3; k++) {
      snprintf(b, sizeof b, "un.%d.%s", L, pn[k]);
      expect(out, b, ref_slice(q, 0, 20 * k, 20));
    }
    ref_free(q);
    /* unstack dim -2 of o as [30, 2, 30]: l = o[:, :30], r = o[:, 30:] */
    ref *o = src_ref(fx->src, "model.layers.%d.self_attn.o_proj.weight", L);
    expect(out, nm(b, "un.%d.ol", L), ref_slice(o, 1, 0, 30));
    expect(out, nm(b, "un.%d.or", L), ref_slice(o, 1, 30, 30));
    ref_free(o);
  }
  assert_null(tree_get(out, "model.norm.weight")); /* consumed by st1 */
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  /* the same without st1, forward then reverse */
  char text[sizeof stack_spec];
  snprintf(text, sizeof text, "%s", stack_spec);
  char *st1 = strstr(text, " {'name': 'st1'"), *un0 = strstr(text, " {'name': 'un0'");
  memmove(st1, un0, strlen(un0) + 1);
  spec = spec_write(fx, text);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
}

/* ---- chunk, split, concat ---- */

static const char chunk_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'ch0', 'inputs': 'model.layers.{L}.mlp.up_proj.weight',\n"
    "  'steps': [{'op': 'chunk', 'chunks': 3, 'out': ['a', 'b', 'c']}],\n"
    "  'output': {'a': 'c.{L}.up0', 'b': 'c.{L}.up1', 'c': 'c.{L}.up2'}},\n"
    " {'name': 'ch1', 'inputs': 'model.layers.{L}.mlp.down_proj.weight',\n"
    "  'steps': [{'op': 'chunk', 'chunks': 'intermediate_size / 7', 'dim': -1, 'out': ['a', 'b', 'c']}],\n"
    "  'output': {'a': 'c.{L}.down0', 'b': 'c.{L}.down1', 'c': 'c.{L}.down2'}},\n"
    " {'name': 'sp0', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
    "  'steps': [{'op': 'split', 'sizes': [7, 'hidden_size - 7'], 'out': ['a', 'b']}],\n"
    "  'output': {'a': 'c.{L}.o0', 'b': 'c.{L}.o1'}},\n"
    " {'name': 'sp1', 'inputs': 'model.embed_tokens.weight',\n"
    "  'steps': [{'op': 'split', 'sizes': [11, 'hidden_size - 11 - 4', 4], 'dim': -1,\n"
    "             'out': ['a', 'b', 'c']}],\n"
    "  'output': {'a': 'c.emb0', 'b': 'c.emb1', 'c': 'c.emb2'}},\n"
    " {'name': 'cat', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
    "                            'k': 'model.layers.{L}.self_attn.k_proj.weight',\n"
    "                            'v': 'model.layers.{L}.self_attn.v_proj.weight'},\n"
    "  'steps': [{'op': 'concat', 'dim': 0, 'sizes': ['num_attention_heads * head_dim',\n"
    "             'num_key_value_heads * head_dim', 'num_key_value_heads * head_dim']}],\n"
    "  'output': 'c.{L}.qkv'},\n"
    " {'name': 'cat1', 'inputs': {'g': 'model.layers.{L}.mlp.gate_proj.weight',\n"
    "                             'n': 'model.layers.{L}.input_layernorm.weight'},\n"
    "  'steps': [{'op': 'unsqueeze', 'in': 'n', 'dim': 0, 'out': 'n1'},\n"
    "            {'op': 'concat', 'in': ['g', 'n1'], 'dim': 0, 'sizes': [21, 1]}],\n"
    "  'output': 'c.{L}.gate_norm'},\n"
    " {'name': 'cat2', 'inputs': {'a': 'model.layers.{L}.post_attention_layernorm.weight',\n"
    "                             'b': 'lm_head.weight'},\n"
    "  'steps': [{'op': 'reshape', 'in': 'a', 'shape': [30, 1], 'out': 'a2'},\n"
    "            {'op': 'transpose', 'in': 'b', 'out': 'bt'},\n"
    "            {'op': 'concat', 'in': ['a2', 'bt'], 'dim': -1}],\n"
    "  'output': 'c.{L}.post_lm'}\n"
    "]}\n";

static void test_chunk_split_concat(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(fx, chunk_spec);
  d9_mount *m = must_mount(fx->llama, spec, 0, 10000);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    ref *x = src_ref(fx->src, "model.layers.%d.mlp.up_proj.weight", L);
    for (int k = 0; k < 3; k++) {
      snprintf(b, sizeof b, "c.%d.up%d", L, k);
      expect(out, b, ref_slice(x, 0, 7 * k, 7));
    }
    ref_free(x);
    x = src_ref(fx->src, "model.layers.%d.mlp.down_proj.weight", L);
    for (int k = 0; k < 3; k++) {
      snprintf(b, sizeof b, "c.%d.down%d", L, k);
      expect(out, b, ref_slice(x, 1, 7 * k, 7));
    }
    ref_free(x);
    x = src_ref(fx->src, "model.layers.%d.self_attn.o_proj.weight", L);
    expect(out, nm(b, "c.%d.o0", L), ref_slice(x, 0, 0, 7));
    expect(out, nm(b, "c.%d.o1", L), ref_slice(x, 0, 7, 23));
    ref_free(x);
    ref *in[3];
    in[0] = src_ref(fx->src, "model.layers.%d.self_attn.q_proj.weight", L);
    in[1] = src_ref(fx->src, "model.layers.%d.self_attn.k_proj.weight", L);
    in[2] = src_ref(fx->src, "model.layers.%d.self_attn.v_proj.weight", L);
    expect(out, nm(b, "c.%d.qkv", L), ref_concat(in, 3, 0));
    ref_free(in[0]), ref_free(in[1]), ref_free(in[2]);
    in[0] = src_ref(fx->src, "model.layers.%d.mlp.gate_proj.weight", L);
    in[1] = ref_reshape(src_ref(fx->src, "model.layers.%d.input_layernorm.weight", L), 2,
                        (int64_t[]){1, 30});
    expect(out, nm(b, "c.%d.gate_norm", L), ref_concat(in, 2, 0));
    ref_free(in[0]), ref_free(in[1]);
    in[0] = ref_reshape(src_ref(fx->src, "model.layers.%d.post_attention_layernorm.weight", L), 2,
                        (int64_t[]){30, 1});
    in[1] = ref_t2(src_ref(fx->src, "lm_head.weight"));
    expect(out, nm(b, "c.%d.post_lm", L), ref_concat(in, 2, 1));
    ref_free(in[0]), ref_free(in[1]);
  }
  ref *e = src_ref(fx->src, "model.embed_tokens.weight");
  expect(out, "c.emb0", ref_slice(e, 1, 0, 11));
  expect(out, "c.emb1", ref_slice(e, 1, 11, 15));
  expect(out, "c.emb2", ref_slice(e, 1, 26, 4));
  ref_free(e);
  assert_null(tree_get(out, "lm_head.weight"));
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  /* forward then reverse, without cat2 (lm_head feeds both layers) */
  char text[sizeof chunk_spec];
  snprintf(text, sizeof text, "%s", chunk_spec);
  char *cut = strstr(text, ",\n {'name': 'cat2'");
  snprintf(cut, sizeof text - (size_t)(cut - text), "\n]}\n");
  spec = spec_write(fx, text);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
  /* sizes that do not add up, chunks that do not divide: refused */
  static const char *const bad[] = {
      "{'op': 'split', 'sizes': [7, 22]}", "add up to 29",
      "{'op': 'chunk', 'chunks': 4}", "not divisible into 4",
  };
  for (int i = 0; i < 4; i += 2) {
    char t[512];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
             " 'inputs': 'model.norm.weight', 'steps': [%s], 'output': {'x': 'x'}}]}", bad[i]);
    spec = spec_write(fx, t);
    d9_diag diag = {0};
    assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
    if (!strstr(diag.msg, bad[i + 1])) fail_msg("%s: got '%s'", bad[i], diag.msg);
    free(spec);
  }
}

/* ---- pad, truncate ---- */

static void test_pad_truncate(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'padm', 'inputs': 'model.embed_tokens.weight',\n"
          "  'steps': [{'op': 'pad', 'multiple': 8, 'from_rows': 'vocab_size'}], 'output': 'p.emb'},\n"
          " {'name': 'padr', 'inputs': 'lm_head.weight',\n"
          "  'steps': [{'op': 'pad', 'rows': 'vocab_size + 8', 'from_rows': 37}], 'output': 'p.lm'},\n"
          " {'name': 'pad1', 'inputs': 'model.norm.weight',\n"
          "  'steps': [{'op': 'pad', 'multiple': 7, 'from_rows': 30}], 'output': 'p.norm'},\n"
          " {'name': 'pad0', 'inputs': 'model.layers.{L}.mlp.up_proj.weight',\n"
          "  'steps': [{'op': 'pad', 'multiple': 3, 'from_rows': 21}], 'output': 'p.{L}.up'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  expect(out, "p.emb", ref_pad(src_ref(fx->src, "model.embed_tokens.weight"), 40));
  expect(out, "p.lm", ref_pad(src_ref(fx->src, "lm_head.weight"), 45));
  expect(out, "p.norm", ref_pad(src_ref(fx->src, "model.norm.weight"), 35));
  for (int L = 0; L < 2; L++) {
    char b[256];
    expect(out, nm(b, "p.%d.up", L), src_ref(fx->src, "model.layers.%d.mlp.up_proj.weight", L));
  }
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
  /* truncate: rows dropped; --reverse pads them back as zeros (lossy) */
  spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'tr', 'inputs': 'model.embed_tokens.weight',\n"
          "  'steps': [{'op': 'truncate', 'rows': 32, 'from_rows': 'vocab_size'}], 'output': 'p.emb'}\n"
          "]}\n");
  m = must_mount(fx->llama, spec, 0, 0);
  out = tree_from_mount(m);
  ref *e = src_ref(fx->src, "model.embed_tokens.weight");
  expect(out, "p.emb", ref_slice(e, 0, 0, 32));
  tree_free(out);
  d9_mount_close(m);
  d9_mount *r = reverse_mount(fx, fx->llama, spec, NULL);
  assert_int_equal(d9_mount_nlossy(r), 1);
  assert_non_null(strstr(d9_mount_lossy(r, 0), "zeros"));
  tree *back = tree_from_mount(r);
  expect(back, "model.embed_tokens.weight", ref_pad(ref_slice(e, 0, 0, 32), 37));
  ref_free(e);
  tree_free(back);
  d9_mount_close(r);
  free(spec);
  /* pad below the current rows, truncate above them: refused */
  static const char *const bad[] = {"{'op': 'pad', 'rows': 36}", "{'op': 'truncate', 'rows': 38}",
                                    "{'op': 'truncate'}", "{'op': 'pad', 'multiple': 0}"};
  for (int i = 0; i < 4; i++) {
    char t[512];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
             " 'inputs': 'model.embed_tokens.weight', 'steps': [%s], 'output': 'x'}]}", bad[i]);
    expect_refused(fx, 0, "steps[0]", NULL, t);
  }
}

/* ---- rope ---- */

static void test_rope(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'rq', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "  'steps': [{'op': 'rope', 'heads': 'num_attention_heads', 'to': 'half'}],\n"
          "  'output': 'r.{L}.q'},\n"
          " {'name': 'rk', 'inputs': 'model.layers.{L}.self_attn.k_proj.weight',\n"
          "  'steps': [{'op': 'rope', 'heads': 'num_key_value_heads', 'to': 'interleaved'}],\n"
          "  'output': 'r.{L}.k'},\n"
          " {'name': 'rb', 'inputs': 'model.norm.weight',\n"
          "  'steps': [{'op': 'rope', 'heads': 5, 'to': 'half'}], 'output': 'r.bias'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  for (int L = 0; L < 2; L++) {
    char b[256];
    ref *q = src_ref(fx->src, "model.layers.%d.self_attn.q_proj.weight", L);
    /* HF permute: w.view(nh, d/2, 2, H).transpose(1, 2).reshape(nh*d, H),
     * here as a view + permute of the reference, independent of ref_rope */
    ref *hf = ref_reshape(ref_dup(q), 4, (int64_t[]){6, 5, 2, 30});
    hf = ref_reshape(ref_permute(hf, (int[]){0, 2, 1, 3}), 2, (int64_t[]){60, 30});
    ref *mine = ref_rope(q, 6, 1);
    assert_memory_equal(hf->b, mine->b, 60 * 30 * 4);
    ref_free(mine);
    expect(out, nm(b, "r.%d.q", L), hf);
    expect(out, nm(b, "r.%d.k", L), ref_rope(src_ref(fx->src, "model.layers.%d.self_attn.k_proj.weight", L), 2, 0));
  }
  expect(out, "r.bias", ref_rope(src_ref(fx->src, "model.norm.weight"), 5, 1));
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, fx->llama, fx->src, spec);
  free(spec);
  /* odd head_dim (30 rows = 10 heads of 3) is refused */
  expect_refused(fx, 0, "even head_dim", NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
                  " 'inputs': 'model.norm.weight', 'steps': [{'op': 'rope', 'heads': 10,"
                  " 'to': 'half'}], 'output': 'x'}]}");
}

/* ---- affine ---- */

static void test_affine(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'p1', 'inputs': 'model.layers.{L}.input_layernorm.weight',\n"
          "  'steps': [{'op': 'affine', 'add': 1}], 'output': 'a.{L}.in'},\n"
          " {'name': 'm1', 'inputs': 'model.layers.{L}.post_attention_layernorm.weight',\n"
          "  'steps': [{'op': 'affine', 'mul': 1, 'add': -1}], 'output': 'a.{L}.post'},\n"
          " {'name': 'ma', 'inputs': 'model.layers.{L}.mlp.down_proj.weight',\n"
          "  'steps': [{'op': 'affine', 'mul': 0.5, 'add': -0.25}], 'output': 'a.{L}.down'},\n"
          " {'name': 'bf', 'inputs': 'model.norm.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'BF16', 'from': 'F32'},\n"
          "            {'op': 'affine', 'mul': 3, 'add': 0.1}], 'output': 'a.norm_bf16'},\n"
          " {'name': 'h', 'inputs': 'model.embed_tokens.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F16', 'from': 'F32'},\n"
          "            {'op': 'affine', 'mul': -2.5, 'add': 1}], 'output': 'a.emb_f16'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    expect(out, nm(b, "a.%d.in", L), ref_affine(src_ref(fx->src, "model.layers.%d.input_layernorm.weight", L), 1, 1));
    expect(out, nm(b, "a.%d.post", L),
           ref_affine(src_ref(fx->src, "model.layers.%d.post_attention_layernorm.weight", L), 1, -1));
    expect(out, nm(b, "a.%d.down", L), ref_affine(src_ref(fx->src, "model.layers.%d.mlp.down_proj.weight", L), 0.5f, -0.25f));
  }
  expect(out, "a.norm_bf16", ref_affine(ref_cast(src_ref(fx->src, "model.norm.weight"), D9_BF16), 3, (float)0.1));
  expect(out, "a.emb_f16",
         ref_affine(ref_cast(src_ref(fx->src, "model.embed_tokens.weight"), D9_F16), -2.5f, 1));
  tree_free(out);
  d9_mount_close(m);
  /* --reverse: x*a+b <-> x*(1/a) + (-b/a), each rounded: lossy, listed,
   * and equal to the same formula applied to the forward output */
  tree *fwd;
  d9_mount *r = reverse_mount(fx, fx->llama, spec, &fwd);
  assert_int_equal(d9_mount_nlossy(r), 7); /* 5 affines, 2 narrowing casts */
  tree *back = tree_from_mount(r);
  for (int L = 0; L < 2; L++) {
    char c[256];
    expect(back, nm(b, "model.layers.%d.input_layernorm.weight", L),
           ref_affine(ref_of(must(fwd, nm(c, "a.%d.in", L))), 1, -1));
    expect(back, nm(b, "model.layers.%d.post_attention_layernorm.weight", L),
           ref_affine(ref_of(must(fwd, nm(c, "a.%d.post", L))), 1, 1));
    expect(back, nm(b, "model.layers.%d.mlp.down_proj.weight", L),
           ref_affine(ref_of(must(fwd, nm(c, "a.%d.down", L))), 2, 0.5f));
    /* and close to the source: |x' - x| <= 2^-25 + 2^-24 + 2^-25 (the
     * add of -0.25 and of 0.5 round; the scalings by 0.5 and 2 are exact) */
    const tens *x = must(fx->src, b), *y = must(back, b);
    for (int64_t i = 0; i < x->numel; i++)
      assert_true(fabsf(f32_at(y->p, i) - f32_at(x->p, i)) <= 0x1p-23f);
  }
  expect(back, "model.norm.weight",
         ref_cast(ref_affine(ref_of(must(fwd, "a.norm_bf16")), (float)(1.0 / 3.0), (float)(-0.1 / 3.0)), D9_F32));
  expect(back, "model.embed_tokens.weight",
         ref_cast(ref_affine(ref_of(must(fwd, "a.emb_f16")), (float)(1.0 / -2.5), (float)(-1.0 / -2.5)), D9_F32));
  tree_free(back);
  tree_free(fwd);
  d9_mount_close(r);
  free(spec);
  /* mul 0 has no inverse: --reverse refused */
  expect_refused(fx, 1, "no inverse", NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'z',"
                  " 'inputs': 'model.norm.weight', 'steps': [{'op': 'affine', 'mul': 0}],"
                  " 'output': 'x'}]}");
}

/* ---- cast ---- */

static void test_cast(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'c16', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F16', 'from': 'F32'}], 'output': 'c.{L}.q16'},\n"
          " {'name': 'cbf', 'inputs': 'model.layers.{L}.self_attn.k_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'BF16', 'from': 'F32'}], 'output': 'c.{L}.kbf'},\n"
          " {'name': 'ce4', 'inputs': 'model.layers.{L}.self_attn.v_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F8_E4M3', 'from': 'F32'}], 'output': 'c.{L}.ve4'},\n"
          " {'name': 'ce5', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F8_E5M2', 'from': 'F32'}], 'output': 'c.{L}.oe5'},\n"
          " {'name': 'same', 'inputs': 'model.norm.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F32', 'from': 'F32'}], 'output': 'c.norm'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  static const struct { const char *src, *dst; d9_dtype to; } cs[] = {
      {"q_proj", "q16", D9_F16}, {"k_proj", "kbf", D9_BF16},
      {"v_proj", "ve4", D9_F8_E4M3}, {"o_proj", "oe5", D9_F8_E5M2}};
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 4; i++) {
      snprintf(b, sizeof b, "c.%d.%s", L, cs[i].dst);
      expect(out, b, ref_cast(src_ref(fx->src, "model.layers.%d.self_attn.%s.weight", L, cs[i].src), cs[i].to));
    }
  expect(out, "c.norm", src_ref(fx->src, "model.norm.weight"));
  tree_free(out);
  d9_mount_close(m);
  /* --reverse casts back (to <-> from): the narrowings are listed lossy
   * and the values are f32(narrow(x)) */
  d9_mount *r = reverse_mount(fx, fx->llama, spec, NULL);
  assert_int_equal(d9_mount_nlossy(r), 4);
  tree *back = tree_from_mount(r);
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 4; i++) {
      snprintf(b, sizeof b, "model.layers.%d.self_attn.%s.weight", L, cs[i].src);
      expect(back, b, ref_cast(ref_cast(ref_of(must(fx->src, b)), cs[i].to), D9_F32));
    }
  expect(back, "model.norm.weight", src_ref(fx->src, "model.norm.weight"));
  tree_free(back);
  d9_mount_close(r);
  free(spec);
  /* widening casts are lossless: BF16 and F16 checkpoints -> F32 -> back */
  d9_dtype dts[2] = {D9_BF16, D9_F16};
  for (int k = 0; k < 2; k++) {
    d9_gen_params p;
    d9_gen_defaults(&p, "qwen2");
    p.layers = 1, p.hidden = 22, p.heads = 2, p.kv_heads = 1, p.intermediate = 13, p.vocab = 19;
    p.dtype = dts[k], p.seed = 99 + (uint64_t)k;
    char *src = gen_ckpt(fx, &p);
    tree *st = tree_from_dir(src);
    char t[512];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'rules': [{'name': 'widen', 'inputs': '{n*}',"
             " 'steps': [{'op': 'cast', 'to': 'F32', 'from': '%s'}], 'output': '{n}'}]}",
             d9_dtype_name(dts[k]));
    spec = spec_write(fx, t);
    m = must_mount(src, spec, 0, 0);
    out = tree_from_mount(m);
    for (int i = 0; i < st->nt; i++) expect(out, st->t[i].name, ref_cast(ref_of(&st->t[i]), D9_F32));
    assert_int_equal(out->nt, st->nt);
    tree_free(out);
    d9_mount_close(m);
    assert_lossless(fx, src, st, spec);
    tree_free(st);
    free(spec);
    free(src);
  }
  /* "from" must name the input's dtype; "to" must be a float type */
  static const char *const bad[] = {"{'op': 'cast', 'to': 'F16', 'from': 'BF16'}", "says \"from\"",
                                    "{'op': 'cast', 'to': 'I32'}", "\"to\" must be"};
  for (int i = 0; i < 4; i += 2) {
    snprintf(b, sizeof b, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
             " 'inputs': 'model.norm.weight', 'steps': [%s], 'output': 'x'}]}", bad[i]);
    spec = spec_write(fx, b);
    d9_diag diag = {0};
    assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
    if (!strstr(diag.msg, bad[i + 1])) fail_msg("%s: got '%s'", bad[i], diag.msg);
    free(spec);
  }
  /* a cast without "from" has no inverse */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'nf',"
                        " 'inputs': 'model.norm.weight', 'steps': [{'op': 'cast', 'to': 'F16'}],"
                        " 'output': 'x'}]}");
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, 1, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "without \"from\""));
  free(spec);
}

/* ---- FP8 block dequant / quant (DeepSeek-V3 style) ---- */

/* The deepseek_fp8 checkpoint: hidden 200, block 64 (ragged edge blocks:
 * 200 = 3 * 64 + 8, 150 = 2 * 64 + 22, 40 < 64), weights and scales in
 * different shards. */
static char *gen_fp8(fixture *fx, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "deepseek_fp8");
  p.layers = 2, p.hidden = 200, p.heads = 5, p.kv_heads = 1, p.intermediate = 150;
  p.vocab = 70, p.dtype = D9_F32, p.block = 64, p.shards = 3, p.seed = 77;
  char *src = gen_ckpt(fx, &p);
  *st = tree_from_dir(src);
  return src;
}

static const char *const fp8_lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                      "mlp.down_proj"};

static const char dequant_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'dq', 'inputs': {'s': '{X*}.weight_scale_inv', 'w': '{X*}.weight'},\n"
    "  'steps': [{'op': 'dequant', 'in': ['w', 's']}], 'output': '{X}.weight',\n"
    "  'exclude': ['model.embed_tokens.weight', 'lm_head.weight', '{x*}norm.weight']}\n"
    "], 'config': {'delete': ['quantization_config'], 'set': {'torch_dtype': 'float32'}}}\n";

/* Quantisation round trip bound, for x finite and the block scale s =
 * fl(amax / 448) a normal F32 (u = 2^-24 the F32 unit roundoff):
 *   y = fl(x / s) = (x / s)(1 + d1), |d1| <= u.
 *   q = e4m3(y): with 3 mantissa bits, in the normal range (|y| >= 2^-6)
 *   round to nearest errs by at most half an ulp, 2^-3 / 2 = 2^-4 of the
 *   binade's lower end, so <= 2^-4 |y|; in the subnormal range the spacing
 *   is 2^-9, so the error is <= 2^-10 (absolute). |x| <= amax and s >=
 *   (amax / 448)(1 - u) give |y| <= 448 (1 + 3u): saturation at 448 costs
 *   less than 2^-4 |y|. So |q - y| <= 2^-4 |y| + 2^-10.
 *   d = fl(q s) = q s (1 + d2), |d2| <= u.
 *   |d - x| <= |q s - y s| + |y s - x| + u |q s|
 *          <= s (2^-4 |y| + 2^-10) + u |x| + u (1.0625 (1 + u) |x| + 2^-10 s)
 *          <= 2^-4 |x| (1 + u) + 2^-10 s + u (2.07 |x| + 2^-10 s)
 *          <= 2^-4 |x| + 2^-10 s + 2^-22 (|x| + s).
 * The 2^-10 s term is the subnormal absolute error scaled back; it
 * matters only for |x| < 2^-6 s, i.e. small values in a block with a
 * large amax. */
static double quant_bound(double x, double s) {
  return ldexp(fabs(x), -4) + ldexp(s, -10) + ldexp(fabs(x) + s, -22);
}

static void test_dequant_quant(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_fp8(fx, &st);
  char *spec = spec_write(fx, dequant_spec);
  d9_mount *m = must_mount(src, spec, 0, 60000);
  tree *out = tree_from_mount(m);
  char b[256], c[256];
  /* weight and scale of some pair live in different source shards */
  int apart = 0;
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 7; i++) {
      snprintf(b, sizeof b, "model.layers.%d.%s.weight", L, fp8_lin[i]);
      snprintf(c, sizeof c, "model.layers.%d.%s.weight_scale_inv", L, fp8_lin[i]);
      const tens *w = must(st, b), *s = must(st, c);
      for (int f = 0; f < st->nf; f++)
        if ((w->p >= st->data[f] && w->p < st->data[f] + st->len[f]) !=
            (s->p >= st->data[f] && s->p < st->data[f] + st->len[f]))
          apart = 1;
      assert_int_equal(s->sh[0], (w->sh[0] + 63) / 64);
      assert_int_equal(s->sh[1], (w->sh[1] + 63) / 64);
      expect(out, b, ref_dequant(w, s, 64, 64));
      assert_null(tree_get(out, c));
    }
  assert_true(apart);
  expect(out, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(out, "model.norm.weight", src_ref(st, "model.norm.weight"));
  /* the patched config: quantization_config gone, undo record present */
  cJSON *cfg = cJSON_ParseWithLength((const char *)out->config, out->config_len);
  assert_non_null(cfg);
  assert_null(cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config"));
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype")->valuestring, "float32");
  assert_non_null(cJSON_GetObjectItemCaseSensitive(cfg, "_d9dfs_config_patch"));
  cJSON_Delete(cfg);
  tree_free(out);
  d9_mount_close(m);

  /* the shipped spec: the same product, rounded to BF16 */
  m = must_mount(src, SPEC_DIR "/deepseek-fp8-to-bf16.json", 0, 0);
  out = tree_from_mount(m);
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 7; i++) {
      snprintf(b, sizeof b, "model.layers.%d.%s.weight", L, fp8_lin[i]);
      snprintf(c, sizeof c, "model.layers.%d.%s.weight_scale_inv", L, fp8_lin[i]);
      expect(out, b, ref_cast(ref_dequant(must(st, b), must(st, c), 64, 64), D9_BF16));
    }
  tree_free(out);
  d9_mount_close(m);

  /* --reverse: quant of the F32 forward output. Scale = amax / 448 of the
   * block (F32), weight = e4m3(x / scale), and dequant(quant(x)) is within
   * the bound above of x; the block size comes back from the restored
   * config (64, not the default 128). */
  tree *fwd;
  d9_mount *r = reverse_mount(fx, src, spec, &fwd);
  assert_int_equal(d9_mount_nlossy(r), 1);
  tree *back = tree_from_mount(r);
  double worst = 0;
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 7; i++) {
      snprintf(b, sizeof b, "model.layers.%d.%s.weight", L, fp8_lin[i]);
      snprintf(c, sizeof c, "model.layers.%d.%s.weight_scale_inv", L, fp8_lin[i]);
      const tens *x = must(fwd, b), *w = must(back, b), *s = must(back, c);
      int64_t M = x->sh[0], N = x->sh[1], bm = (M + 63) / 64, bn = (N + 63) / 64;
      assert_int_equal(w->dt, D9_F8_E4M3);
      assert_int_equal(s->dt, D9_F32);
      assert_int_equal(s->sh[0], bm);
      assert_int_equal(s->sh[1], bn);
      for (int64_t bi = 0; bi < bm; bi++)
        for (int64_t bj = 0; bj < bn; bj++) {
          float amax = 0;
          for (int64_t ii = bi * 64; ii < M && ii < bi * 64 + 64; ii++)
            for (int64_t jj = bj * 64; jj < N && jj < bj * 64 + 64; jj++)
              amax = fmaxf(amax, fabsf(f32_at(x->p, ii * N + jj)));
          volatile float want = amax == 0 ? 1.0f : amax / 448.0f;
          float got = f32_at(s->p, bi * bn + bj);
          assert_memory_equal(&got, (const void *)&want, 4);
          for (int64_t ii = bi * 64; ii < M && ii < bi * 64 + 64; ii++)
            for (int64_t jj = bj * 64; jj < N && jj < bj * 64 + 64; jj++) {
              volatile float xv = f32_at(x->p, ii * N + jj);
              volatile float y = xv / want;
              assert_int_equal(w->p[ii * N + jj], d9_f32_to_e4m3(y));
              volatile float d = e4m3_dec(w->p[ii * N + jj]) * want;
              double err = fabs((double)d - (double)xv), bound = quant_bound(xv, want);
              if (err > bound)
                fail_msg("%s [%lld, %lld]: |dequant(quant(x)) - x| = %g > %g", b, (long long)ii,
                         (long long)jj, err, bound);
              if (err / bound > worst) worst = err / bound;
            }
        }
    }
  assert_true(worst > 0.25); /* the bound is not vacuous */
  expect(back, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(back, "model.layers.1.input_layernorm.weight", src_ref(st, "model.layers.1.input_layernorm.weight"));
  assert_int_equal(back->nt, st->nt);
  /* the original config is back, undo record gone */
  cJSON *a = cJSON_ParseWithLength((const char *)st->config, st->config_len);
  cJSON *z = cJSON_ParseWithLength((const char *)back->config, back->config_len);
  assert_non_null(a);
  assert_non_null(z);
  assert_true(cJSON_Compare(a, z, 1));
  cJSON_Delete(a);
  cJSON_Delete(z);
  tree_free(back);
  tree_free(fwd);
  d9_mount_close(r);
  free(spec);

  /* E4M3 -> F16 / BF16 / F32 widening casts are exact both ways */
  static const char *const wide[] = {"F16", "BF16", "F32"};
  for (int k = 0; k < 3; k++) {
    char t[1024];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'w',"
             " 'inputs': 'model.layers.{L}.{m}.{p}_proj.weight', 'steps': [{'op': 'cast',"
             " 'to': '%s', 'from': 'F8_E4M3'}], 'output': 'model.layers.{L}.{m}.{p}_proj.weight'}]}",
             wide[k]);
    spec = spec_write(fx, t);
    assert_lossless(fx, src, st, spec);
    free(spec);
  }
  /* without "exclude", the reversed rule would quantise the norms too */
  char text[sizeof dequant_spec];
  snprintf(text, sizeof text, "%s", dequant_spec);
  char *ex = strstr(text, ",\n  'exclude'"), *end = strstr(text, "}\n]");
  memmove(ex, end, strlen(end) + 1);
  spec = spec_write(fx, text);
  char *fdir = forward_dir(fx, src, spec, 0);
  d9_diag diag = {0};
  assert_null(try_mount(fdir, spec, 1, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "quantised tensor"));
  free(fdir);
  free(spec);
  tree_free(st);
  free(src);
}

/* ---- rule keys: over, unstack, exclude ---- */

static char *gen_mixtral(fixture *fx, int64_t experts, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "mixtral");
  p.layers = 2, p.hidden = 18, p.heads = 3, p.kv_heads = 1, p.intermediate = 10;
  p.vocab = 23, p.experts = experts, p.dtype = D9_F32, p.shards = 2, p.seed = 5;
  char *src = gen_ckpt(fx, &p);
  *st = tree_from_dir(src);
  return src;
}

static const char over_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'gate_up', 'over': 'E',\n"
    "  'inputs': {'w1': 'model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight',\n"
    "             'w3': 'model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight'},\n"
    "  'steps': [{'op': 'concat', 'dim': 0, 'sizes': ['intermediate_size', 'intermediate_size']}],\n"
    "  'output': 'model.layers.{L}.mlp.experts.gate_up_proj'},\n"
    " {'name': 'down', 'over': 'E', 'inputs': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight',\n"
    "  'output': 'model.layers.{L}.mlp.experts.down_proj'}\n"
    "]}\n";

static void test_over_unstack(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_mixtral(fx, 11, &st); /* experts 0..10: "10" must come after "9" */
  char *spec = spec_write(fx, over_spec);
  d9_mount *m = must_mount(src, spec, 0, 20000);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    ref *gu[11], *dn[11];
    for (int e = 0; e < 11; e++) {
      ref *in[2] = {src_ref(st, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", L, e),
                    src_ref(st, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", L, e)};
      gu[e] = ref_concat(in, 2, 0);
      ref_free(in[0]), ref_free(in[1]);
      dn[e] = src_ref(st, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", L, e);
    }
    /* row [e, r] = w1_e[r] for r < I, else w3_e[r - I], e numeric */
    ref *g = ref_stack(gu, 11, 0);
    const tens *w1_10 = must(st, nm(b, "model.layers.%d.block_sparse_moe.experts.10.w1.weight", L));
    assert_memory_equal(g->b + 10 * 20 * 18 * 4, w1_10->p, 10 * 18 * 4);
    expect(out, nm(b, "model.layers.%d.mlp.experts.gate_up_proj", L), g);
    expect(out, nm(b, "model.layers.%d.mlp.experts.down_proj", L), ref_stack(dn, 11, 0));
    for (int e = 0; e < 11; e++) ref_free(gu[e]), ref_free(dn[e]);
  }
  for (int i = 0; i < out->nt; i++) assert_null(strstr(out->t[i].name, "experts.0."));
  tree_free(out);
  d9_mount_close(m);
  /* over <-> unstack under --reverse: the experts come back */
  assert_lossless(fx, src, st, spec);
  /* the shipped spec agrees */
  m = must_mount(src, SPEC_DIR "/mixtral-to-hf-fused-experts.json", 0, 0);
  out = tree_from_mount(m);
  char *fdir = forward_dir(fx, src, spec, 0);
  tree *mine = tree_from_dir(fdir);
  for (int L = 0; L < 2; L++) {
    nm(b, "model.layers.%d.mlp.experts.gate_up_proj", L);
    expect(out, b, ref_of(must(mine, b)));
    nm(b, "model.layers.%d.mlp.experts.down_proj", L);
    expect(out, b, ref_of(must(mine, b)));
  }
  tree_free(out);
  d9_mount_close(m);
  free(spec);

  /* forward "unstack": a hand-written inverse over the fused tree, every
   * input cut along dim 0, the capture E filled with 0..n-1 */
  spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'split_experts', 'unstack': 'E',\n"
          "  'inputs': {'gu': 'model.layers.{L}.mlp.experts.gate_up_proj',\n"
          "             'd': 'model.layers.{L}.mlp.experts.down_proj'},\n"
          "  'steps': [{'op': 'chunk', 'in': 'gu', 'chunks': 2, 'out': ['w1', 'w3']}],\n"
          "  'output': {'w1': 'model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight',\n"
          "             'w3': 'model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight',\n"
          "             'd': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight'}}\n"
          "]}\n");
  m = must_mount(fdir, spec, 0, 0);
  out = tree_from_mount(m);
  assert_same_tensors(st, out);
  tree_free(out);
  d9_mount_close(m);
  tree_free(mine);
  free(fdir);
  free(spec);

  /* unstack of a source tensor's rows, and back with over */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'rows',"
                        " 'unstack': 'R', 'inputs': 'model.embed_tokens.weight',"
                        " 'output': 'emb.{R}'}]}");
  m = must_mount(src, spec, 0, 0);
  out = tree_from_mount(m);
  ref *e = src_ref(st, "model.embed_tokens.weight");
  for (int r = 0; r < 23; r++) {
    snprintf(b, sizeof b, "emb.%d", r);
    expect(out, b, ref_reshape(ref_slice(e, 0, r, 1), 1, (int64_t[]){18}));
  }
  ref_free(e);
  assert_null(tree_get(out, "model.embed_tokens.weight"));
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, src, st, spec);
  free(spec);

  /* exclude: a missing expert index is refused, naming it */
  spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'down', 'over': 'E', 'exclude': ['model.layers.1.{x*}.5.w2.weight'],\n"
          "  'inputs': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight',\n"
          "  'output': 'model.layers.{L}.mlp.experts.down_proj'}]}\n");
  d9_diag diag = {0};
  assert_null(try_mount(src, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "index 5 is missing"));
  assert_non_null(strstr(diag.msg, "model.layers.1.mlp.experts.down_proj"));
  free(spec);

  /* a capture that is not an index cannot be stacked over */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'o',"
                        " 'over': 'P', 'inputs': 'model.layers.0.self_attn.{P}.weight',"
                        " 'output': 'all'}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(src, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "is not an index"));
  free(spec);
  tree_free(st);
  free(src);
}

/* exclude in the forward direction: the driver names it matches are left
 * to later rules and pass-through */
static void test_exclude(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'x2', 'inputs': 'model.layers.{L}.{m}.{p}_proj.weight',\n"
          "  'exclude': ['model.layers.1.{x*}', '{x*}.q_proj.weight'],\n"
          "  'steps': [{'op': 'affine', 'mul': 2}], 'output': 'model.layers.{L}.{m}.{p}_proj.weight'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  for (int i = 0; i < fx->src->nt; i++) {
    const tens *t = &fx->src->t[i];
    int doubled = !strncmp(t->name, "model.layers.0.", 15) && strstr(t->name, "_proj.") &&
                  !strstr(t->name, "q_proj");
    expect(out, t->name, doubled ? ref_affine(ref_of(t), 2, 0) : ref_of(t));
  }
  assert_int_equal(out->nt, fx->src->nt);
  tree_free(out);
  d9_mount_close(m);
  free(spec);
}

/* ---- tied alias, required, ignore ---- */

static const char tied_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'lm_head', 'inputs': 'lm_head.weight',\n"
    "  'tied': {'from': 'model.embed_tokens.weight', 'if': 'tie_word_embeddings'},\n"
    "  'output': 'lm_head.weight'}]}\n";

static char *gen_tied(fixture *fx, int tied, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 1, p.hidden = 14, p.heads = 2, p.kv_heads = 1, p.intermediate = 9, p.vocab = 11;
  p.dtype = D9_F32, p.tied = tied, p.seed = 3;
  char *src = gen_ckpt(fx, &p);
  *st = tree_from_dir(src);
  return src;
}

static void test_tied(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_tied(fx, 1, &st);
  assert_null(tree_get(st, "lm_head.weight"));
  char *spec = spec_write(fx, tied_spec);
  d9_mount *m = must_mount(src, spec, 0, 0);
  tree *out = tree_from_mount(m);
  /* the alias reads the embedding without consuming it */
  expect(out, "lm_head.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(out, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  assert_int_equal(out->nt, st->nt + 1);
  tree_free(out);
  d9_mount_close(m);
  /* reversed: the alias is dropped when the flag is set */
  assert_lossless(fx, src, st, spec);
  tree_free(st);
  free(src);
  /* untied: the explicit lm_head is used */
  src = gen_tied(fx, 0, &st);
  m = must_mount(src, spec, 0, 0);
  out = tree_from_mount(m);
  expect(out, "lm_head.weight", src_ref(st, "lm_head.weight"));
  assert_int_equal(out->nt, st->nt);
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, src, st, spec);
  free(spec);
  /* the flag unset and lm_head missing: refused, naming both */
  /* the checkpoint without lm_head, written through a spec that ignores it */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'ignore': ['lm_head.weight']}");
  char *nolm = forward_dir(fx, src, spec, 0);
  free(spec);
  spec = spec_write(fx, tied_spec);
  d9_diag diag = {0};
  assert_null(try_mount(nolm, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "tie_word_embeddings"));
  assert_non_null(strstr(diag.msg, "lm_head.weight"));
  free(spec);
  /* required: no match is an error */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'lm',"
                        " 'required': true, 'inputs': 'lm_head.weight', 'output': 'out'}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(nolm, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "no source tensor matches"));
  free(spec);
  /* ignore: dropped, counted, and a rule does not see it */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'ignore': ['model.layers.{L}.{n}norm.weight'],"
                        " 'rules': [{'name': 'all_norms', 'inputs': '{x*}norm.weight',"
                        " 'steps': [{'op': 'affine', 'add': 1}], 'output': '{x}norm.weight'}]}");
  m = must_mount(src, spec, 0, 0);
  out = tree_from_mount(m);
  assert_int_equal(d9_mount_nignored(m), 2);
  assert_null(tree_get(out, "model.layers.0.input_layernorm.weight"));
  expect(out, "model.norm.weight", ref_affine(src_ref(st, "model.norm.weight"), 1, 1));
  assert_int_equal(out->nt, st->nt - 2);
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  free(nolm);
  tree_free(st);
  free(src);
}

/* ---- config patches ---- */

static void test_config_patch(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true,\n"
          " 'config': {'set': {'torch_dtype': 'bfloat16', 'new_key': {'a': [1, 2]}, 'hidden_size': 30},\n"
          "            'delete': ['rms_norm_eps', 'no_such_key']}}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  cJSON *orig = cJSON_ParseWithLength((const char *)fx->src->config, fx->src->config_len);
  cJSON *cfg = cJSON_ParseWithLength((const char *)out->config, out->config_len);
  assert_non_null(orig);
  assert_non_null(cfg);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype")->valuestring, "bfloat16");
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(cfg, "hidden_size")->valueint, 30);
  cJSON *nk = cJSON_GetObjectItemCaseSensitive(cfg, "new_key");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(nk, "a")), 2);
  assert_null(cJSON_GetObjectItemCaseSensitive(cfg, "rms_norm_eps"));
  /* the undo record: what was removed, replaced and added */
  cJSON *u = cJSON_GetObjectItemCaseSensitive(cfg, "_d9dfs_config_patch");
  assert_non_null(u);
  cJSON *rem = cJSON_GetObjectItemCaseSensitive(u, "removed");
  assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(rem, "rms_norm_eps"),
                            cJSON_GetObjectItemCaseSensitive(orig, "rms_norm_eps"), 1));
  assert_int_equal(cJSON_GetArraySize(rem), 1);
  cJSON *rep = cJSON_GetObjectItemCaseSensitive(u, "replaced");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(rep, "torch_dtype")->valuestring, "float32");
  assert_non_null(cJSON_GetObjectItemCaseSensitive(rep, "hidden_size"));
  cJSON *add = cJSON_GetObjectItemCaseSensitive(u, "added");
  assert_int_equal(cJSON_GetArraySize(add), 1);
  assert_string_equal(cJSON_GetArrayItem(add, 0)->valuestring, "new_key");
  /* every other key unchanged */
  cJSON *e;
  cJSON_ArrayForEach(e, orig) {
    if (!strcmp(e->string, "torch_dtype") || !strcmp(e->string, "rms_norm_eps")) continue;
    assert_true(cJSON_Compare(e, cJSON_GetObjectItemCaseSensitive(cfg, e->string), 1));
  }
  /* the other copied files are byte for byte the source's */
  for (int f = 0; f < fx->src->nf; f++)
    if (strstr(fx->src->fname[f], "tokenizer") || strstr(fx->src->fname[f], "generation")) {
      int found = 0;
      for (int g = 0; g < out->nf; g++)
        if (!strcmp(out->fname[g], fx->src->fname[f])) {
          found = 1;
          assert_int_equal(out->len[g], fx->src->len[f]);
          assert_memory_equal(out->data[g], fx->src->data[f], out->len[g]);
        }
      assert_true(found);
    }
  cJSON_Delete(cfg);
  tree_free(out);
  d9_mount_close(m);
  /* --reverse restores the original config (same keys and values) */
  d9_mount *r = reverse_mount(fx, fx->llama, spec, NULL);
  tree *back = tree_from_mount(r);
  cfg = cJSON_ParseWithLength((const char *)back->config, back->config_len);
  assert_non_null(cfg);
  assert_true(cJSON_Compare(orig, cfg, 1));
  assert_same_tensors(fx->src, back);
  cJSON_Delete(cfg);
  cJSON_Delete(orig);
  tree_free(back);
  d9_mount_close(r);
  free(spec);
  /* malformed patches are refused at parse */
  static const char *const bad[] = {"'config': {'set': 3}", "'config': {'drop': []}",
                                    "'config': {'delete': [1]}", "'config': []"};
  for (int i = 0; i < 4; i++) {
    char t[256];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, %s}", bad[i]);
    expect_refused(fx, 0, "config", NULL, t);
  }
}

/* ---- validation report: strict refuses, lenient mounts and lists ---- */

static void test_report(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'needs_x', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "                                'x': 'model.layers.{L}.self_attn.x_proj.weight'},\n"
          "  'steps': [{'op': 'concat'}], 'output': 'qx.{L}'},\n"
          " {'name': 'fine', 'inputs': 'model.norm.weight', 'output': 'final_norm'}]}\n");
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "needs_x"));
  assert_non_null(strstr(diag.msg, "x_proj"));
  d9_mount *m = try_mount(fx->llama, spec, 0, 1, 0, &diag);
  assert_non_null(m);
  int idx = d9_mount_resolve(m, ".d9dfs/report.json");
  assert_true(idx > 0);
  assert_int_equal(d9_mount_node(m, idx)->kind, D9_NODE_DYNAMIC);
  char *text;
  size_t len;
  assert_int_equal(d9_mount_render(m, idx, &text, &len), 0);
  cJSON *rep = cJSON_ParseWithLength(text, len);
  assert_non_null(rep);
  assert_int_equal(cJSON_GetArraySize(rep), 2); /* one per layer */
  assert_non_null(strstr(cJSON_GetArrayItem(rep, 1)->valuestring, "model.layers.1.self_attn.x_proj"));
  cJSON_Delete(rep);
  free(text);
  tree *out = tree_from_mount(m);
  assert_null(tree_get(out, "qx.0"));
  expect(out, "final_norm", src_ref(fx->src, "model.norm.weight"));
  expect(out, "model.layers.0.self_attn.k_proj.weight", src_ref(fx->src, "model.layers.0.self_attn.k_proj.weight"));
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  /* an unused source tensor in strict mode (no pass-through) is a finding */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'rules': [{'inputs': '{n*}.weight', 'output': '{n}.weight',"
                        " 'exclude': ['lm_head.weight']}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "lm_head.weight"));
  assert_non_null(strstr(diag.msg, "used by no rule"));
  free(spec);
}

/* ---- laziness: one spec with every op; random ranges == whole slices ---- */

static const char all_ops_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true,\n"
    " 'params': {'d': 'hidden_size / num_attention_heads', 'kv': 'num_key_value_heads'},\n"
    " 'rules': [\n"
    " {'name': 'qkv', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
    "    'qs': 'model.layers.{L}.self_attn.q_proj.weight_scale_inv',\n"
    "    'k': 'model.layers.{L}.self_attn.k_proj.weight',\n"
    "    'ks': 'model.layers.{L}.self_attn.k_proj.weight_scale_inv',\n"
    "    'v': 'model.layers.{L}.self_attn.v_proj.weight',\n"
    "    'vs': 'model.layers.{L}.self_attn.v_proj.weight_scale_inv'},\n"
    "  'steps': [{'op': 'dequant', 'in': ['q', 'qs'], 'out': 'qf'},\n"
    "            {'op': 'dequant', 'in': ['k', 'ks'], 'out': 'kf'},\n"
    "            {'op': 'dequant', 'in': ['v', 'vs'], 'out': 'vf'},\n"
    "            {'op': 'rope', 'in': 'qf', 'heads': 'num_attention_heads', 'to': 'half', 'out': 'qr'},\n"
    "            {'op': 'rope', 'in': 'kf', 'heads': 'kv', 'to': 'half', 'out': 'kr'},\n"
    "            {'op': 'qkv', 'in': ['qr', 'kr', 'vf'], 'heads': 'num_attention_heads', 'groups': 'kv',\n"
    "             'head_dim': 'd', 'out': 'fused'},\n"
    "            {'op': 'cast', 'in': 'fused', 'to': 'BF16', 'out': 'fused16'},\n"
    "            {'op': 'qkv_split', 'in': 'fused', 'heads': 'num_attention_heads', 'groups': 'kv',\n"
    "             'head_dim': 'd', 'out': ['q2', 'k2', 'v2']},\n"
    "            {'op': 'interleave', 'in': ['k2', 'v2'], 'group': 'd', 'out': 'kvi'},\n"
    "            {'op': 'transpose', 'in': 'q2', 'out': 'qt'},\n"
    "            {'op': 'quant', 'in': 'kvi', 'block': [32, 48], 'out': ['kvq', 'kvs']}],\n"
    "  'output': {'fused16': 'l{L}.qkv', 'qt': 'l{L}.q_t', 'kvq': 'l{L}.kv_q', 'kvs': 'l{L}.kv_scale'}},\n"
    " {'name': 'o', 'inputs': {'w': 'model.layers.{L}.self_attn.o_proj.weight',\n"
    "    's': 'model.layers.{L}.self_attn.o_proj.weight_scale_inv'},\n"
    "  'steps': [{'op': 'dequant', 'in': ['w', 's']},\n"
    "            {'op': 'reshape', 'shape': ['hidden_size', 'num_attention_heads', 'd']},\n"
    "            {'op': 'permute', 'dims': [1, 2, 0]},\n"
    "            {'op': 'cast', 'to': 'F16'}], 'output': 'l{L}.o_perm'},\n"
    " {'name': 'mlp', 'inputs': {'g': 'model.layers.{L}.mlp.gate_proj.weight',\n"
    "    'gs': 'model.layers.{L}.mlp.gate_proj.weight_scale_inv',\n"
    "    'u': 'model.layers.{L}.mlp.up_proj.weight',\n"
    "    'us': 'model.layers.{L}.mlp.up_proj.weight_scale_inv',\n"
    "    'd': 'model.layers.{L}.mlp.down_proj.weight',\n"
    "    'ds': 'model.layers.{L}.mlp.down_proj.weight_scale_inv'},\n"
    "  'steps': [{'op': 'dequant', 'in': ['g', 'gs'], 'out': 'gf'},\n"
    "            {'op': 'dequant', 'in': ['u', 'us'], 'out': 'uf'},\n"
    "            {'op': 'dequant', 'in': ['d', 'ds'], 'out': 'df'},\n"
    "            {'op': 'interleave', 'in': ['gf', 'uf'], 'out': 'gu'},\n"
    "            {'op': 'slice', 'in': 'gu', 'dim': 0, 'start': -101, 'end': -3, 'out': 'gus'},\n"
    "            {'op': 'deinterleave', 'in': 'gu', 'parts': 2, 'out': ['g2', 'u2']},\n"
    "            {'op': 'stack', 'in': ['g2', 'u2'], 'dim': 1, 'out': 'gust'},\n"
    "            {'op': 'unstack', 'in': 'gust', 'dim': 1, 'out': ['g3', 'u3']},\n"
    "            {'op': 'concat', 'in': ['g3', 'u3'], 'dim': -1, 'sizes': [200, 200], 'out': 'guc'},\n"
    "            {'op': 'chunk', 'in': 'df', 'chunks': 3, 'dim': 1, 'out': ['d0', 'd1', 'd2']},\n"
    "            {'op': 'split', 'in': 'd1', 'sizes': [13, 187], 'out': ['d1a', 'd1b']},\n"
    "            {'op': 'affine', 'in': 'd2', 'mul': 0.75, 'add': 0.125, 'out': 'd2a'}],\n"
    "  'output': {'gus': 'l{L}.gu_slice', 'guc': 'l{L}.gu_cat', 'd0': 'l{L}.d0', 'd1a': 'l{L}.d1a',\n"
    "             'd1b': 'l{L}.d1b', 'd2a': 'l{L}.d2'}},\n"
    " {'name': 'norms', 'over': 'L', 'inputs': 'model.layers.{L}.input_layernorm.weight',\n"
    "  'steps': [{'op': 'unsqueeze', 'dim': -1}, {'op': 'squeeze', 'dim': 1},\n"
    "            {'op': 'affine', 'add': 1}, {'op': 'cast', 'to': 'F8_E5M2'}], 'output': 'norms.in'},\n"
    " {'name': 'emb', 'inputs': 'model.embed_tokens.weight',\n"
    "  'steps': [{'op': 'pad', 'multiple': 16}, {'op': 'truncate', 'rows': 64},\n"
    "            {'op': 'deinterleave', 'parts': 2, 'group': 8, 'out': ['a', 'b']}],\n"
    "  'output': {'a': 'emb.a', 'b': 'emb.b'}},\n"
    " {'name': 'rows', 'unstack': 'R', 'inputs': 'lm_head.weight', 'output': 'lm.{R}'}\n"
    "]}\n";

static void test_all_ops_random_ranges(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_fp8(fx, &st);
  char *spec = spec_write(fx, all_ops_spec);
  d9_mount *m = must_mount(src, spec, 0, 90000);
  tree *whole = tree_from_mount(m);
  assert_true(whole->nf >= 4);
  /* a few of the outputs against their references, so the spec is known
   * to do what it says */
  char b[256], c[256];
  for (int L = 0; L < 2; L++) {
    ref *d = ref_dequant(must(st, nm(b, "model.layers.%d.mlp.down_proj.weight", L)),
                         must(st, nm(c, "model.layers.%d.mlp.down_proj.weight_scale_inv", L)), 64, 64);
    expect(whole, nm(b, "l%d.d0", L), ref_slice(d, 1, 0, 50));
    expect(whole, nm(b, "l%d.d2", L), ref_affine(ref_slice(d, 1, 100, 50), 0.75f, 0.125f));
    ref_free(d);
    ref *q = ref_dequant(must(st, nm(b, "model.layers.%d.self_attn.q_proj.weight", L)),
                         must(st, nm(c, "model.layers.%d.self_attn.q_proj.weight_scale_inv", L)), 64, 64);
    expect(whole, nm(b, "l%d.q_t", L), ref_t2(ref_rope(q, 5, 1)));
  }
  ref *e = ref_pad(src_ref(st, "model.embed_tokens.weight"), 80), *e64 = ref_slice(e, 0, 0, 64);
  expect(whole, "emb.b", ref_deinterleave(e64, 2, 8, 1));
  ref_free(e), ref_free(e64);
  /* random (offset, length) reads of every file, unaligned, across
   * header / tensor / file ends */
  const d9_vnode *root = d9_mount_node(m, 0);
  int idx[TREE_FILES];
  for (int f = 0; f < whole->nf; f++) {
    idx[f] = -1;
    for (int k = 0; k < root->nchildren; k++)
      if (!strcmp(d9_mount_node(m, root->children[k])->name, whole->fname[f])) idx[f] = root->children[k];
    assert_true(idx[f] > 0);
  }
  uint64_t x = 0x9e3779b97f4a7c15ull;
  unsigned char *buf = malloc(1 << 20);
  assert_non_null(buf);
  for (int it = 0; it < 4000; it++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int f = (int)(x % (uint64_t)whole->nf);
    uint64_t len = whole->len[f];
    uint64_t off = (x >> 8) % (len + 16);
    uint64_t n = (x >> 32) % 4 == 0 ? (x >> 40) % 24 : (x >> 24) % (len / 2 + 2);
    if (n > (1 << 20)) n = 1 << 20;
    ssize_t r = d9_mount_read(m, idx[f], off, n, buf);
    uint64_t want = off >= len ? 0 : (n < len - off ? n : len - off);
    if (r != (ssize_t)want)
      fail_msg("%s [%llu, +%llu): read %zd, want %llu", whole->fname[f], (unsigned long long)off,
               (unsigned long long)n, r, (unsigned long long)want);
    if (want && memcmp(buf, whole->data[f] + off, want))
      fail_msg("%s [%llu, +%llu): bytes differ from the whole file", whole->fname[f],
               (unsigned long long)off, (unsigned long long)n);
  }
  free(buf);
  tree_free(whole);
  d9_mount_close(m);
  free(spec);
  tree_free(st);
  free(src);
}

/* ---- defects found while writing this file (expected behaviour; these
 * fail until fixed) ---- */

/* REGRESSION (fixed; was a bug: spec_reverse.c, inverse_op CONCAT): a concat without "sizes" reverses
 * to an equal "chunk", whatever the inputs' sizes were. Spec: concat q_proj
 * [60, 30] and k_proj [20, 30] on dim 0, no "sizes". Forward is right
 * ([80, 30]); --reverse over its output mounts without complaint and
 * serves q_proj and k_proj as [40, 30] each - wrong shapes and wrong
 * bytes, not reported as lossy. Expected: the reversed mount is refused
 * (naming the step and asking for "sizes"), or gives the sources back. */
static void regression_concat_without_sizes_reverses_wrong(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'cat', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "                            'k': 'model.layers.{L}.self_attn.k_proj.weight'},\n"
          "  'steps': [{'op': 'concat', 'dim': 0}], 'output': 'qk.{L}'}]}\n");
  char *fdir = forward_dir(fx, fx->llama, spec, 0);
  d9_diag diag = {0};
  d9_mount *r = try_mount(fdir, spec, 1, 0, 0, &diag);
  int ok = 1;
  char why[600] = "";
  if (r) {
    tree *back = tree_from_mount(r);
    ok = same_tensors(fx->src, back, why, sizeof why);
    tree_free(back);
    d9_mount_close(r);
  }
  free(fdir);
  free(spec);
  if (!ok) fail_msg("reverse mounted, but %s", why); /* fails: q_proj comes back [40, 30] */
}

/* REGRESSION (fixed; was a bug: graph.c run_step): the arguments that exist only for --reverse
 * ("sizes" on concat, "from_rows" on pad and truncate, "from_shape" on
 * reshape) are not checked against the input when the spec runs forward,
 * while "from" on cast is. Specs (llama F32 fixture):
 *   concat q_proj [60, 30], k_proj, v_proj [20, 30], dim 0, "sizes": [20, 60, 20]
 *   pad model.embed_tokens.weight [37, 30] to "multiple": 8, "from_rows": 36
 *   truncate model.embed_tokens.weight to "rows": 30, "from_rows": 40
 *   reshape q_proj [60, 30] to [6, 10, 30], "from_shape": [30, 60]
 * Expected: each forward mount is refused, naming the step and the
 * disagreeing argument (as a cast with a wrong "from" is). Actual: all
 * mount, and --reverse then silently serves tensors of the wrong shape
 * (q [20, 30] / k [60, 30]; a 36-row embedding; a [30, 60] q_proj). */
static void regression_inverse_args_unchecked(void **state) {
  fixture *fx = *state;
  static const char *const rules[] = {
      "{'name': 'cat', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',"
      " 'k': 'model.layers.{L}.self_attn.k_proj.weight', 'v': 'model.layers.{L}.self_attn.v_proj.weight'},"
      " 'steps': [{'op': 'concat', 'dim': 0, 'sizes': [20, 60, 20]}], 'output': 'qkv.{L}'}",
      "{'name': 'pad', 'inputs': 'model.embed_tokens.weight',"
      " 'steps': [{'op': 'pad', 'multiple': 8, 'from_rows': 36}], 'output': 'emb'}",
      "{'name': 'trunc', 'inputs': 'model.embed_tokens.weight',"
      " 'steps': [{'op': 'truncate', 'rows': 30, 'from_rows': 40}], 'output': 'emb'}",
      "{'name': 'view', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',"
      " 'steps': [{'op': 'reshape', 'shape': [6, 10, 30], 'from_shape': [30, 60]}], 'output': 'q.{L}'}",
  };
  char mounted[256] = "";
  for (int i = 0; i < 4; i++) {
    char t[1024];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [%s]}", rules[i]);
    char *spec = spec_write(fx, t);
    d9_diag diag = {0};
    d9_mount *m = try_mount(fx->llama, spec, 0, 0, 0, &diag);
    if (m) strcat(mounted, i == 0 ? " concat.sizes" : i == 1 ? " pad.from_rows" : i == 2 ? " truncate.from_rows" : " reshape.from_shape");
    d9_mount_close(m);
    free(spec);
  }
  if (mounted[0]) fail_msg("mounted despite a wrong inverse argument:%s", mounted); /* fails */
}

/* REGRESSION (fixed; was a bug: spec_reverse.c, inverse_op CAST): the lossy test ranks dtypes
 * "F8_E5M2 F8_E4M3 BF16 F16 F32" by position, so a cast BF16 -> F16 or
 * F8_E5M2 -> F8_E4M3 is taken as widening. Both lose values (F16 has a
 * narrower exponent range than BF16: 1e30 becomes Inf, 2^-20 (1 + 2^-7)
 * is rounded; E4M3 saturates E5M2's 57344 to 448). Spec: cast to F16
 * from BF16 on a BF16 tensor holding such values. Expected: the reversed
 * spec lists the step as lossy (d9_mount_nlossy >= 1, so `d9dfs check`
 * does not call the spec lossless). Actual: nlossy = 0 and the round
 * trip returns other bytes. */
static void regression_cast_lossy_rank(void **state) {
  fixture *fx = *state;
  char *dir = work_dir(fx, "bf16");
  assert_int_equal(mkdir(dir, 0755), 0);
  uint16_t v[4] = {d9_f32_to_bf16(1e30f), d9_f32_to_bf16(0x1.02p-20f), d9_f32_to_bf16(3.0f),
                   d9_f32_to_bf16(-0.5f)};
  d9_st_tensor t = {.name = "w", .dtype = D9_BF16, .ndim = 1, .shape = {4}};
  unsigned char *hdr;
  uint64_t hlen;
  assert_int_equal(d9_st_write_header(&t, 1, NULL, NULL, 0, &hdr, &hlen), 0);
  char path[4300];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(hdr, 1, hlen, f), hlen);
  assert_int_equal(fwrite(v, 1, sizeof v, f), sizeof v);
  assert_int_equal(fclose(f), 0);
  free(hdr);
  tree *st = tree_from_dir(dir);
  char *spec = spec_write(fx, "{'d9dfs_spec': 1, 'rules': [{'name': 'c', 'inputs': 'w',"
                              " 'steps': [{'op': 'cast', 'to': 'F16', 'from': 'BF16'}], 'output': 'w'}]}");
  d9_mount *r = reverse_mount(fx, dir, spec, NULL);
  tree *back = tree_from_mount(r);
  int same = !memcmp(must(back, "w")->p, v, sizeof v);
  int nlossy = d9_mount_nlossy(r);
  tree_free(back);
  d9_mount_close(r);
  tree_free(st);
  free(spec);
  free(dir);
  assert_false(same);        /* the data really is lost ... */
  assert_true(nlossy >= 1);  /* ... so the step must be listed (fails: 0) */
}

/* REGRESSION (fixed; was a bug: graph.c expand_over + soft): in lenient mode, one stacking group
 * with a missing index ends the whole rule: the groups sorted after it are
 * never built, and their source tensors fall to pass-through without any
 * finding. Spec: over E on Mixtral w2, experts 0..10, expert 5 of layer 0
 * excluded. Expected (lenient): one finding for layer 0, and layer 1's
 * down_proj [11, 18, 10] built. Actual: layer 1 is not built either. */
static void regression_lenient_over_drops_later_groups(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_mixtral(fx, 11, &st);
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'down', 'over': 'E', 'exclude': ['model.layers.0.{x*}.5.w2.weight'],\n"
          "  'inputs': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight',\n"
          "  'output': 'model.layers.{L}.mlp.experts.down_proj'}]}\n");
  d9_diag diag = {0};
  d9_mount *m = try_mount(src, spec, 0, 1, 0, &diag);
  if (!m) fail_msg("lenient mount: %s", diag.msg);
  tree *out = tree_from_mount(m);
  int has1 = tree_get(out, "model.layers.1.mlp.experts.down_proj") != NULL;
  tree_free(out);
  d9_mount_close(m);
  tree_free(st);
  free(spec);
  free(src);
  assert_true(has1); /* fails */
}

/* REGRESSION (fixed; was a bug: spec.c d9_spec_apply_config): converting twice with config patches
 * (e.g. FP8 -> BF16, then a second patched spec over the result) adds a
 * second "_d9dfs_config_patch" key to config.json; the strict JSON parser
 * then refuses that config (duplicate key), so the twice-converted tree
 * cannot be mounted at all, and the first undo record would be lost.
 * Expected: the second conversion mounts, and reversing both gives the
 * original config back. */
static void regression_config_patch_twice(void **state) {
  fixture *fx = *state;
  char *s1 = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'config': {'set': {'a': 1}}}");
  char *s2 = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'config': {'set': {'b': 2},"
                            " 'delete': ['torch_dtype']}}");
  char *f1 = forward_dir(fx, fx->llama, s1, 0);
  char *f2 = forward_dir(fx, f1, s2, 0);
  d9_diag diag = {0};
  d9_mount *r2 = try_mount(f2, s2, 1, 0, 0, &diag);
  int same = 0;
  if (r2) {
    char *b1 = work_dir(fx, "back");
    convert_to(r2, b1);
    d9_mount_close(r2);
    d9_mount *r1 = must_mount(b1, s1, 1, 0);
    tree *back = tree_from_mount(r1);
    cJSON *orig = cJSON_ParseWithLength((const char *)fx->src->config, fx->src->config_len);
    cJSON *cfg = cJSON_ParseWithLength((const char *)back->config, back->config_len);
    same = cJSON_Compare(orig, cfg, 1);
    cJSON_Delete(orig);
    cJSON_Delete(cfg);
    tree_free(back);
    d9_mount_close(r1);
    free(b1);
  }
  free(f1), free(f2), free(s1), free(s2);
  /* fails here: config.json: duplicate key '_d9dfs_config_patch' */
  if (!r2) fail_msg("reverse of the second conversion: %s", diag.msg);
  assert_true(same);
}

/* REGRESSION (fixed; was a bug: graph.c expand_rule / spec_reverse.c drop_if): with
 * tie_word_embeddings set and an explicit lm_head.weight of the embedding's
 * shape and dtype but other values (861c7dc refuses only a shape or dtype
 * mismatch, by design without reading data), the forward mount uses
 * lm_head silently, and --reverse drops the alias because the flag is set:
 * lm_head.weight is lost in the round trip, with no finding and no lossy
 * line (so `d9dfs check` calls the spec lossless and then fails on a
 * missing tensor). Spec: the gemma-style "lm_head" tied rule, with
 * pass-through. Expected: the forward mount refused or a finding, or the
 * reverse keeping lm_head, or at least the drop listed as lossy. */
static void regression_tied_flag_with_explicit_lm_head(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_tied(fx, 0, &st);
  char cfg[4300];
  snprintf(cfg, sizeof cfg, "sed -i 's/\"tie_word_embeddings\": false/\"tie_word_embeddings\": true/' '%s/config.json'", src);
  assert_int_equal(system(cfg), 0);
  tree_free(st);
  st = tree_from_dir(src);
  char *spec = spec_write(fx, tied_spec);
  d9_diag diag = {0};
  d9_mount *m = try_mount(src, spec, 0, 0, 0, &diag);
  int kept = 1;
  if (m) {
    int shadowed = d9_mount_nshadowed(m); /* d9dfs check lists it as lossy */
    d9_mount_close(m);
    d9_mount *r = reverse_mount(fx, src, spec, NULL);
    tree *back = tree_from_mount(r);
    kept = tree_get(back, "lm_head.weight") != NULL || d9_mount_nlossy(r) > 0 || shadowed > 0;
    tree_free(back);
    d9_mount_close(r);
  }
  tree_free(st);
  free(spec);
  free(src);
  assert_true(kept); /* fails: mounted, and lm_head.weight dropped by --reverse */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transpose_permute),
      cmocka_unit_test(test_squeeze_unsqueeze),
      cmocka_unit_test(test_slice),
      cmocka_unit_test(test_interleave),
      cmocka_unit_test(test_stack_unstack),
      cmocka_unit_test(test_chunk_split_concat),
      cmocka_unit_test(test_pad_truncate),
      cmocka_unit_test(test_rope),
      cmocka_unit_test(test_affine),
      cmocka_unit_test(test_cast),
      cmocka_unit_test(test_dequant_quant),
      cmocka_unit_test(test_over_unstack),
      cmocka_unit_test(test_exclude),
      cmocka_unit_test(test_tied),
      cmocka_unit_test(test_config_patch),
      cmocka_unit_test(test_report),
      cmocka_unit_test(test_all_ops_random_ranges),
      cmocka_unit_test(regression_concat_without_sizes_reverses_wrong),
      cmocka_unit_test(regression_inverse_args_unchecked),
      cmocka_unit_test(regression_cast_lossy_rank),
      cmocka_unit_test(regression_lenient_over_drops_later_groups),
      cmocka_unit_test(regression_config_patch_twice),
      cmocka_unit_test(regression_tied_flag_with_explicit_lm_head),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
