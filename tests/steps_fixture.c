/* steps_fixture.c - see steps_fixture.h. */
#include "steps_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

/* ---- trees: every tensor of a set of safetensors files ---- */







tree *tree_new(void) {
  tree *tr = calloc(1, sizeof *tr);
  assert_non_null(tr);
  tr->a = d9_arena_create();
  assert_non_null(tr->a);
  return tr;
}

void tree_free(tree *tr) {
  if (!tr) return;
  for (int i = 0; i < tr->nf; i++) free(tr->fname[i]), free(tr->data[i]);
  d9_arena_destroy(tr->a);
  free(tr);
}

const tens *tree_get(const tree *tr, const char *name) {
  for (int i = 0; i < tr->nt; i++)
    if (!strcmp(tr->t[i].name, name)) return &tr->t[i];
  return NULL;
}

const tens *must(const tree *tr, const char *name) {
  const tens *t = tree_get(tr, name);
  if (!t) fail_msg("no tensor '%s' in the tree", name);
  return t;
}

/* Takes ownership of data. */
void tree_add(tree *tr, const char *name, unsigned char *data, uint64_t len) {
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

tree *tree_from_dir(const char *dir) {
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
tree *tree_from_mount(d9_mount *m) {
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



/* dir/name with the text written in; single quotes in text become double
 * quotes, so specs read naturally in C. Returns the path (caller frees). */
char *spec_write(fixture *fx, const char *text) {
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

char *work_dir(fixture *fx, const char *what) {
  char *p = malloc(4200);
  assert_non_null(p);
  snprintf(p, 4200, "%s/%s%d", fx->dir, what, fx->seq++);
  return p;
}

d9_mount *try_mount(const char *src, const char *spec, int reverse, int lenient,
                           uint64_t shard, d9_diag *diag) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .reverse = reverse,
                     .lenient = lenient, .max_shard_size = shard};
  d9_mount *m = NULL;
  int rc = d9_mount_open(&o, &m, diag);
  return rc ? NULL : m;
}

/* A spec that mounting (reverse = 1: mounting --reverse over the llama
 * fixture) must refuse, with a message holding want1 (and want2). */
void expect_refused(fixture *fx, int reverse, const char *want1, const char *want2,
                           const char *spec_text) {
  char *spec = spec_write(fx, spec_text);
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, reverse, 0, 0, &diag));
  if (!strstr(diag.msg, want1) || (want2 && !strstr(diag.msg, want2)))
    fail_msg("refused with '%s', want '%s'%s%s", diag.msg, want1, want2 ? " and " : "",
             want2 ? want2 : "");
  free(spec);
}

d9_mount *must_mount(const char *src, const char *spec, int reverse, uint64_t shard) {
  d9_diag diag = {0};
  d9_mount *m = try_mount(src, spec, reverse, 0, shard, &diag);
  if (!m) fail_msg("mount %s%s: %s", spec, reverse ? " (reverse)" : "", diag.msg);
  return m;
}

/* Write every file of m into dir (created), as `d9dfs convert` does. */
void convert_to(d9_mount *m, const char *dir) {
  assert_int_equal(mkdir(dir, 0755), 0);
  tree *tr = tree_from_mount(m);
  for (int i = 0; i < tr->nf; i++) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, tr->fname[i]);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(tr->data[i], 1, tr->len[i], f), tr->len[i]);
    assert_int_equal(fclose(f), 0);
  }
  tree_free(tr);
}

/* Forward-convert src with spec into a new directory (returned, malloc'd). */
char *forward_dir(fixture *fx, const char *src, const char *spec, uint64_t shard) {
  d9_mount *m = must_mount(src, spec, 0, shard);
  char *out = work_dir(fx, "fwd");
  convert_to(m, out);
  d9_mount_close(m);
  return out;
}

/* The spec's forward output, mounted with --reverse; *fwd gets the forward
 * tree when not NULL. The caller closes the mount. */
d9_mount *reverse_mount(fixture *fx, const char *src, const char *spec, tree **fwd) {
  char *out = forward_dir(fx, src, spec, 30000);
  if (fwd) *fwd = tree_from_dir(out);
  d9_mount *r = must_mount(out, spec, 1, 0);
  free(out);
  return r;
}

/* 1 if every tensor of a is in b with the same dtype, shape and bytes, and
 * b has no others; else 0 with the first difference in why. */
int same_tensors(const tree *a, const tree *b, char *why, size_t n) {
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

void assert_same_tensors(const tree *a, const tree *b) {
  char why[600];
  if (!same_tensors(a, b, why, sizeof why)) fail_msg("%s", why);
}

/* Forward then reverse gives every source tensor back, byte for byte, and
 * the reversed spec lists no lossy step. */
void assert_lossless(fixture *fx, const char *src, const tree *st, const char *spec) {
  d9_mount *r = reverse_mount(fx, src, spec, NULL);
  tree *back = tree_from_mount(r);
  assert_int_equal(d9_mount_nlossy(r), 0);
  assert_same_tensors(st, back);
  tree_free(back);
  d9_mount_close(r);
}

char *gen_ckpt(fixture *fx, d9_gen_params *p) {
  char *path = work_dir(fx, d9_gen_family_name(p->family));
  d9_diag diag = {0};
  int rc = d9_gen_write(path, p, &diag);
  if (rc) fail_msg("gen: %s", diag.msg);
  return path;
}

int steps_setup(void **state) {
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

int steps_teardown(void **state) {
  fixture *fx = *state;
  tree_free(fx->src);
  tu_rmrf(fx->dir);
  free(fx->dir);
  free(fx);
  return 0;
}

/* ---- naive references: whole tensors, index arithmetic ---- */



size_t es_of(d9_dtype t) { return d9_dtype_size(t); }

ref *ref_new(d9_dtype dt, int nd, const int64_t *sh) {
  ref *r = calloc(1, sizeof *r);
  assert_non_null(r);
  r->dt = dt, r->nd = nd, r->numel = 1;
  for (int k = 0; k < nd; k++) r->sh[k] = sh[k], r->numel *= sh[k];
  r->b = calloc((size_t)r->numel + 1, es_of(dt));
  assert_non_null(r->b);
  return r;
}

void ref_free(ref *r) {
  if (r) free(r->b), free(r);
}

ref *ref_of(const tens *t) {
  ref *r = ref_new(t->dt, t->nd, t->sh);
  memcpy(r->b, t->p, t->nbytes);
  return r;
}

ref *ref_dup(const ref *x) {
  ref *r = ref_new(x->dt, x->nd, x->sh);
  memcpy(r->b, x->b, (size_t)x->numel * es_of(x->dt));
  return r;
}

void unravel(int64_t i, const int64_t *sh, int nd, int64_t *ix) {
  for (int k = nd - 1; k >= 0; k--) {
    ix[k] = i % sh[k];
    i /= sh[k];
  }
}

int64_t ravel(const int64_t *ix, const int64_t *sh, int nd) {
  int64_t i = 0;
  for (int k = 0; k < nd; k++) i = i * sh[k] + ix[k];
  return i;
}

void copy_el(ref *dst, int64_t di, const unsigned char *src, int64_t si) {
  size_t es = es_of(dst->dt);
  memcpy(dst->b + (size_t)di * es, src + (size_t)si * es, es);
}

float f32_at(const void *p, int64_t i) {
  float f;
  memcpy(&f, (const unsigned char *)p + 4 * i, 4);
  return f;
}

/* Same elements, new shape (reshape, squeeze, unsqueeze). */
ref *ref_reshape(ref *x, int nd, const int64_t *sh) {
  int64_t n = 1;
  for (int k = 0; k < nd; k++) n *= sh[k];
  assert_int_equal(n, x->numel);
  x->nd = nd;
  memcpy(x->sh, sh, sizeof(int64_t) * (size_t)nd);
  return x;
}

/* out[i_0..i_{n-1}] = x[j] with j[perm[k]] = i_k; consumes x. */
ref *ref_permute(ref *x, const int *perm) {
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
ref *ref_t2(ref *x) {
  assert_int_equal(x->nd, 2);
  int64_t sh[2] = {x->sh[1], x->sh[0]};
  ref *o = ref_new(x->dt, 2, sh);
  for (int64_t i = 0; i < x->sh[0]; i++)
    for (int64_t j = 0; j < x->sh[1]; j++) copy_el(o, j * sh[1] + i, x->b, i * x->sh[1] + j);
  ref_free(x);
  return o;
}

/* Elements [start, start+len) along dim; does not consume x. */
ref *ref_slice(const ref *x, int dim, int64_t start, int64_t len) {
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
ref *ref_concat(ref *const *in, int n, int dim) {
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
ref *ref_stack(ref *const *in, int n, int dim) {
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
ref *ref_interleave(ref *const *in, int n, int64_t g) {
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
ref *ref_deinterleave(const ref *x, int parts, int64_t g, int p) {
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
ref *ref_pad(ref *x, int64_t rows) {
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
ref *ref_rope(ref *x, int64_t nh, int half) {
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

float to_f32(const unsigned char *p, d9_dtype t) {
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

void from_f32(unsigned char *p, d9_dtype t, float f) {
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
ref *ref_cast(ref *x, d9_dtype to) {
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
ref *ref_affine(ref *x, float a, float b) {
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
float e4m3_dec(uint8_t v) {
  int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
  if (e == 15 && m == 7) return NAN;
  float r = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m, -9);
  return s ? -r : r;
}

/* out[i,j] = f32(w[i,j]) * s[i/b0, j/b1], one F32 multiply. */
ref *ref_dequant(const tens *w, const tens *s, int64_t b0, int64_t b1) {
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
void expect(const tree *tr, const char *name, ref *r) {
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

ref *src_ref(const tree *st, const char *fmt, ...) {
  char name[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return ref_of(must(st, name));
}

const char *nm(char *buf, const char *fmt, int L) {
  snprintf(buf, 256, fmt, L);
  return buf;
}


/* ---- checkpoints and specs more than one test file uses ---- */

/* The deepseek_fp8 checkpoint: hidden 200, block 64 (ragged edge blocks:
 * 200 = 3 * 64 + 8, 150 = 2 * 64 + 22, 40 < 64), weights and scales in
 * different shards. */
char *gen_fp8(fixture *fx, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "deepseek_fp8");
  p.layers = 2, p.hidden = 200, p.heads = 5, p.kv_heads = 1, p.intermediate = 150;
  p.vocab = 70, p.dtype = D9_F32, p.block = 64, p.shards = 3, p.seed = 77;
  char *src = gen_ckpt(fx, &p);
  *st = tree_from_dir(src);
  return src;
}

char *gen_mixtral(fixture *fx, int64_t experts, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "mixtral");
  p.layers = 2, p.hidden = 18, p.heads = 3, p.kv_heads = 1, p.intermediate = 10;
  p.vocab = 23, p.experts = experts, p.dtype = D9_F32, p.shards = 2, p.seed = 5;
  char *src = gen_ckpt(fx, &p);
  *st = tree_from_dir(src);
  return src;
}

const char tied_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'lm_head', 'inputs': 'lm_head.weight',\n"
    "  'tied': {'from': 'model.embed_tokens.weight', 'if': 'tie_word_embeddings'},\n"
    "  'output': 'lm_head.weight'}]}\n";

char *gen_tied(fixture *fx, int tied, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 1, p.hidden = 14, p.heads = 2, p.kv_heads = 1, p.intermediate = 9, p.vocab = 11;
  p.dtype = D9_F32, p.tied = tied, p.seed = 3;
  char *src = gen_ckpt(fx, &p);
  *st = tree_from_dir(src);
  return src;
}
