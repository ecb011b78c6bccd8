/* test_backend.c - every compute of a read goes through the read's backend.
 *
 * A test backend wraps the CPU backend and records every call per member
 * (calls and elements). For every shipped spec in mounts/ (a generated
 * checkpoint of the family the spec is written for) and for one test spec
 * that uses the members no shipped spec reaches forward (transpose, quant,
 * a cast to F8_E4M3 that saturates), the spec is built into a graph and a
 * plan at the evaluator's level, and every target is read whole and in
 * seeded random ranges with the CPU backend and with test backends:
 *  - recording: the same bytes; backend calls iff the target computes;
 *  - flipping (the CPU's answer with every output byte inverted, amax
 *    bumped): the bytes of every computing target differ, of every other
 *    target are equal - so no compute of a read happens outside the table;
 *  - refusing (-EINVAL): a computing target's read fails with -EINVAL, the
 *    others read as before - the error is not papered over;
 *  - absent (-EIO / -ENOTSUP / -ENOMEM / -ENODEV, every other call after
 *    scribbling over its output, as a failed GPU call may; amax after
 *    folding its maxima, the most a failed CUDA amax does): the evaluator's
 *    fallback computes on the CPU, the bytes are the CPU's.
 * A backend lacking the optional members (NULL mxfp4_*) gives the CPU's
 * bytes. Every planned safetensors file is also read whole and in random ranges
 * with d9_eval_read through the recording backend. "Computes" is decided
 * from the graph: a CAST, AFFINE, DEQUANT or QUANT node, or a PERMUTE whose
 * output rows run along the input's last dim (the tiles that transpose). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <math.h>

#include "kernels/kernels.h"
#include "mapper/config_patch.h"
#include "mapper/eval.h"
#include "mapper/graph.h"
#include "mapper/json_strict.h"
#include "mapper/plan.h"
#include "mapper/spec.h"
#include "steps_fixture.h"
#include "testutil.h"

#include <cjson/cJSON.h>

#define SEED UINT64_C(0xbacc0e2d5eed0001)
enum { RANGES = 12, MEMBERS = 8 };
enum { M_CAST, M_AFFINE, M_DEQUANT, M_AMAX, M_QUANT, M_TRANSPOSE, M_MXDQ, M_MXQ };
static const char *const MEMBER[MEMBERS] = {"cast", "affine", "fp8_dequant", "fp8_amax",
                                            "fp8_quant", "transpose", "mxfp4_dequant",
                                            "mxfp4_quant"};

/* ---- the test backend (test-only statics: the members take no context) ---- */

typedef enum { RECORD, FLIP, REFUSE, ABSENT } be_mode;
static struct {
  be_mode mode;
  uint64_t calls[MEMBERS], elems[MEMBERS];
  uint64_t total[MEMBERS]; /* over the whole run */
} rec;

static void rec_reset(void) {
  memset(rec.calls, 0, sizeof rec.calls);
  memset(rec.elems, 0, sizeof rec.elems);
}

static uint64_t rec_calls(void) {
  uint64_t n = 0;
  for (int m = 0; m < MEMBERS; m++) n += rec.calls[m];
  return n;
}

/* Counts the call; for REFUSE / ABSENT returns the error to answer (ABSENT
 * cycles through the "not here" errors), else 0. */
static int enter(int m, int64_t elems) {
  static const int absent[] = {-EIO, -ENOTSUP, -ENOMEM, -ENODEV};
  rec.calls[m]++, rec.total[m]++;
  rec.elems[m] += (uint64_t)(elems > 0 ? elems : 0);
  if (rec.mode == REFUSE) return -EINVAL;
  if (rec.mode == ABSENT) return absent[rec.calls[m] % 4];
  return 0;
}

static void flip(void *p, size_t n) {
  for (size_t i = 0; i < n; i++) ((unsigned char *)p)[i] ^= 0xff;
}

/* ABSENT: every other failing call leaves garbage in its output. */
static void scribble(int m, void *p, size_t n) {
  if (rec.mode == ABSENT && rec.calls[m] % 2) memset(p, 0x5a, n);
}

static int t_cast(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n) {
  int r = enter(M_CAST, n);
  if (r) scribble(M_CAST, dst, (size_t)n * d9_dtype_size(dt));
  if (r || (r = d9_backend_cpu()->cast(dst, dt, src, st, n))) return r;
  if (rec.mode == FLIP) flip(dst, (size_t)n * d9_dtype_size(dt));
  return 0;
}

static int t_affine(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n, float a,
                    float b) {
  int r = enter(M_AFFINE, n);
  if (r) scribble(M_AFFINE, dst, (size_t)n * d9_dtype_size(dt));
  if (r || (r = d9_backend_cpu()->affine(dst, dt, src, st, n, a, b))) return r;
  if (rec.mode == FLIP) flip(dst, (size_t)n * d9_dtype_size(dt));
  return 0;
}

static int t_dequant(void *dst, const uint8_t *w, d9_dtype wt, const float *scale,
                     const d9_fp8_box *b) {
  int r = enter(M_DEQUANT, b->rows * b->n);
  if (r) scribble(M_DEQUANT, dst, (size_t)(b->rows * b->n) * 4);
  if (r || (r = d9_backend_cpu()->fp8_dequant(dst, w, wt, scale, b))) return r;
  if (rec.mode == FLIP) flip(dst, (size_t)(b->rows * b->n) * 4);
  return 0;
}

static int t_amax(float *amax, const float *x, const d9_fp8_box *b) {
  int r = enter(M_AMAX, b->rows * b->n);
  if (r == -EINVAL) return r;
  if (r) { /* folded, then failed */
    if (rec.calls[M_AMAX] % 2) d9_backend_cpu()->fp8_amax(amax, x, b);
    return r;
  }
  if ((r = d9_backend_cpu()->fp8_amax(amax, x, b))) return r;
  if (rec.mode == FLIP && b->rows && b->n) { /* every entry the box touches, + 1 */
    int64_t nrb = (b->i0 + b->rows - 1) / b->b0 - b->i0 / b->b0 + 1;
    int64_t ncb = (b->j0 + b->n - 1) / b->b1 - b->j0 / b->b1 + 1;
    for (int64_t i = 0; i < nrb; i++)
      for (int64_t k = 0; k < ncb; k++) amax[i * b->lds + k] += 1.0f;
  }
  return 0;
}

static int t_quant(uint8_t *dst, const float *x, const float *scale, const d9_fp8_box *b) {
  int r = enter(M_QUANT, b->rows * b->n);
  if (r) scribble(M_QUANT, dst, (size_t)(b->rows * b->n));
  if (r || (r = d9_backend_cpu()->fp8_quant(dst, x, scale, b))) return r;
  if (rec.mode == FLIP) flip(dst, (size_t)(b->rows * b->n));
  return 0;
}

static int t_transpose(void *dst, const void *src, size_t es, int64_t batch, int64_t rows,
                       int64_t cols) {
  int r = enter(M_TRANSPOSE, batch * rows * cols);
  if (r) scribble(M_TRANSPOSE, dst, (size_t)(batch * rows * cols) * es);
  if (r || (r = d9_backend_cpu()->transpose(dst, src, es, batch, rows, cols))) return r;
  if (rec.mode == FLIP) flip(dst, (size_t)(batch * rows * cols) * es);
  return 0;
}

/* FLIP for the MXFP4 members: every byte + 1, not inverted, so that a
 * transpose that flips after them (a permute of the dequantised tensor)
 * does not undo it. */
static void bump(void *p, size_t n) {
  for (size_t i = 0; i < n; i++) ((unsigned char *)p)[i]++;
}

static int t_mx_dequant(void *dst, d9_dtype dt, const uint8_t *blocks, const uint8_t *scales,
                        int64_t j0, int64_t n, int64_t group) {
  int r = enter(M_MXDQ, n);
  size_t nb = (size_t)(n > 0 ? n : 0) * d9_dtype_size(dt);
  if (r) scribble(M_MXDQ, dst, nb);
  if (r || (r = d9_backend_cpu()->mxfp4_dequant(dst, dt, blocks, scales, j0, n, group)))
    return r;
  if (rec.mode == FLIP) bump(dst, nb);
  return 0;
}

static int t_mx_quant(uint8_t *blocks, uint8_t *scales, const float *x, int64_t ngroups,
                      int64_t group) {
  int r = enter(M_MXQ, ngroups * group);
  size_t nb = (size_t)(ngroups * group / 2);
  if (r) scribble(M_MXQ, blocks, nb), scribble(M_MXQ, scales, (size_t)ngroups);
  if (r || (r = d9_backend_cpu()->mxfp4_quant(blocks, scales, x, ngroups, group))) return r;
  if (rec.mode == FLIP) bump(blocks, nb), bump(scales, (size_t)ngroups);
  return 0;
}

static const d9_backend test_be = {"test", t_cast, t_affine, t_dequant, t_amax, t_quant,
                                   t_transpose, t_mx_dequant, t_mx_quant};
/* A backend without the optional members (kernels.h): the CPU's run instead. */
static const d9_backend lacking_be = {"lacking", t_cast, t_affine, t_dequant, t_amax, t_quant,
                                      t_transpose, NULL, NULL};

/* ---- what computes ---- */

static int computes(const d9_node *x) {
  int n = x->ndim;
  switch (x->op) {
    case D9_OP_CAST:
    case D9_OP_AFFINE:
    case D9_OP_DEQUANT:
    case D9_OP_QUANT_W:
    case D9_OP_QUANT_S:
    case D9_OP_MXFP4_DQ:
    case D9_OP_MXFP4_QB:
    case D9_OP_MXFP4_QS: return 1;
    case D9_OP_PERMUTE:
      if (n >= 2 && x->perm[n - 2] == n - 1 && x->shape[n - 2] > 1 && x->shape[n - 1] > 1)
        return 1;
      break;
    default: break;
  }
  for (int i = 0; i < x->nin; i++)
    if (computes(x->in[i])) return 1;
  return 0;
}

/* ---- one spec over one checkpoint, at the evaluator's level ---- */

typedef struct built {
  d9_catalog *cat;
  d9_spec *fwd;  /* reverse builds: the forward spec (the reversed one borrows it) */
  d9_spec *spec;
  d9_graph *g;
  d9_plan *plan;
  unsigned char *scratch;
} built;

/* spec_path over the checkpoint src as a mount builds it, or (reverse)
 * its inverse over src, a tree the spec made: the config patches undone
 * first, as `mount --reverse` does. */
static void build(built *b, const char *src, const char *spec_path, int reverse) {
  d9_diag diag = {0};
  char *text = NULL;
  size_t len;
  memset(b, 0, sizeof *b);
  int rc = d9_read_small_file(AT_FDCWD, spec_path, 1 << 20, &text, &len, &diag);
  if (!rc) rc = d9_spec_parse(text, len, spec_path, reverse ? &b->fwd : &b->spec, &diag);
  if (!rc) rc = d9_catalog_open(src, &b->cat, &diag);
  if (!rc && reverse) rc = d9_config_restore(b->cat, &diag);
  if (!rc && reverse && !(rc = d9_spec_resolve_params(b->fwd, b->cat->config, &diag)))
    rc = d9_spec_reverse(b->fwd, b->cat->config, &b->spec, &diag);
  if (!rc) rc = d9_spec_resolve_params(b->spec, b->cat->config, &diag);
  if (!rc) rc = d9_graph_build(b->spec, b->cat, &b->g, &diag);
  if (!rc)
    rc = d9_plan_build(b->spec, b->cat, b->g->targets, b->g->ntargets, &b->plan, &diag);
  free(text);
  if (rc) fail_msg("%s%s on %s: %s", spec_path, reverse ? " (reverse)" : "", src, diag.msg);
  assert_non_null(b->scratch = malloc(D9_SCRATCH_BYTES));
}

static void unbuild(built *b) {
  free(b->scratch);
  d9_plan_destroy(b->plan);
  d9_graph_destroy(b->g);
  d9_spec_destroy(b->spec);
  d9_spec_destroy(b->fwd);
  d9_catalog_close(b->cat);
}

static d9_read_ctx ctx(built *b, const d9_backend *be) {
  return (d9_read_ctx){.cat = b->cat, .be = be, .scratch = b->scratch};
}

static uint64_t rng_state;
static uint64_t rnd(void) {
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Elements [s, s+n) of x with backend be (mode set) into out. */
static int fill(built *b, const d9_backend *be, const d9_node *x, int64_t s, int64_t n,
                void *out) {
  d9_read_ctx rc = ctx(b, be);
  int r = d9_eval_fill(&rc, x, s, n, out);
  assert_int_equal(rc.scratch_top, 0);
  return r;
}

/* Every target of b against its CPU bytes, with each mode of the test
 * backend. Returns the number of computing targets. */
static int check_targets(built *b, const char *what) {
  int ncomp = 0;
  for (int t = 0; t < b->g->ntargets; t++) {
    const d9_target *tg = &b->g->targets[t];
    const d9_node *x = tg->node;
    size_t es = d9_dtype_size(x->dtype), nb = (size_t)x->numel * es;
    int comp = x->numel > 0 && computes(x);
    ncomp += comp;
    unsigned char *want = malloc(nb + 1), *got = malloc(nb + 1);
    assert_true(want && got);
    assert_int_equal(fill(b, d9_backend_cpu(), x, 0, x->numel, want), 0);

    rec.mode = RECORD;
    rec_reset();
    assert_int_equal(fill(b, &test_be, x, 0, x->numel, got), 0);
    if (memcmp(got, want, nb)) fail_msg("%s: '%s': recording backend, other bytes", what, tg->name);
    if ((rec_calls() > 0) != comp)
      fail_msg("%s: '%s' %s but made %llu backend calls", what, tg->name,
               comp ? "computes" : "only moves bytes", (unsigned long long)rec_calls());
    for (int k = 0; k < RANGES && x->numel > 0; k++) {
      int64_t s = (int64_t)(rnd() % (uint64_t)x->numel);
      int64_t n = 1 + (int64_t)(rnd() % (uint64_t)(x->numel - s));
      memset(got, 0xa5, nb);
      assert_int_equal(fill(b, &test_be, x, s, n, got), 0);
      if (memcmp(got, want + (size_t)s * es, (size_t)n * es))
        fail_msg("%s: '%s' [%lld, +%lld): other bytes", what, tg->name, (long long)s,
                 (long long)n);
    }

    /* a backend lacking the optional members: the CPU computes them */
    rec_reset();
    memset(got, 0x5a, nb);
    assert_int_equal(fill(b, &lacking_be, x, 0, x->numel, got), 0);
    if (memcmp(got, want, nb)) fail_msg("%s: '%s': lacking backend, other bytes", what, tg->name);
    assert_int_equal(rec.calls[M_MXDQ] + rec.calls[M_MXQ], 0);

    rec.mode = FLIP;
    assert_int_equal(fill(b, &test_be, x, 0, x->numel, got), 0);
    if ((memcmp(got, want, nb) != 0) != comp)
      fail_msg("%s: '%s' %s, yet a backend with other answers %s its bytes", what, tg->name,
               comp ? "computes" : "only moves bytes", comp ? "kept" : "changed");

    rec.mode = REFUSE;
    int r = fill(b, &test_be, x, 0, x->numel, got);
    assert_int_equal(r, comp ? -EINVAL : 0);
    if (!comp && memcmp(got, want, nb)) fail_msg("%s: '%s': other bytes", what, tg->name);

    rec.mode = ABSENT;
    rec_reset();
    memset(got, 0x5a, nb);
    assert_int_equal(fill(b, &test_be, x, 0, x->numel, got), 0);
    if (memcmp(got, want, nb)) fail_msg("%s: '%s': the CPU fallback gave other bytes", what, tg->name);
    assert_true((rec_calls() > 0) == comp);
    free(want);
    free(got);
  }
  rec.mode = RECORD;
  return ncomp;
}

/* Every planned safetensors file, whole and in random byte ranges, with
 * d9_eval_read through the recording backend against the CPU backend. */
static void check_files(built *b, const char *what) {
  for (int f = 0; f < b->plan->nfiles; f++) {
    const d9_vfile *vf = &b->plan->files[f];
    if (vf->kind != D9_VF_TENSORS) continue;
    size_t n = (size_t)vf->size;
    unsigned char *want = malloc(n), *got = malloc(n);
    assert_true(want && got);
    d9_read_ctx rc = ctx(b, d9_backend_cpu());
    assert_int_equal(d9_eval_read(&rc, vf, 0, n, want), (ssize_t)n);
    rc = ctx(b, &test_be);
    assert_int_equal(d9_eval_read(&rc, vf, 0, n, got), (ssize_t)n);
    if (memcmp(got, want, n)) fail_msg("%s: %s read whole: other bytes", what, vf->name);
    for (int k = 0; k < RANGES; k++) {
      uint64_t off = rnd() % n, len = 1 + rnd() % (n - off);
      rc = ctx(b, &test_be);
      assert_int_equal(d9_eval_read(&rc, vf, off, (size_t)len, got), (ssize_t)len);
      if (memcmp(got, want + off, (size_t)len))
        fail_msg("%s: %s [%llu, +%llu): other bytes", what, vf->name, (unsigned long long)off,
                 (unsigned long long)len);
    }
    free(want);
    free(got);
  }
}

static int run_spec(const char *src, const char *spec, int reverse, const char *what) {
  built b;
  build(&b, src, spec, reverse);
  int ncomp = check_targets(&b, what);
  check_files(&b, what);
  print_message("%s: %d targets, %d compute\n", what, b.g->ntargets, ncomp);
  unbuild(&b);
  return ncomp;
}

/* ---- the checkpoints ---- */

static char *gen(const char *root, const char *name, d9_gen_params *p) {
  char *path = malloc(4200);
  assert_non_null(path);
  snprintf(path, 4200, "%s/%s", root, name);
  d9_diag diag = {0};
  if (d9_gen_write(path, p, &diag)) fail_msg("gen %s: %s", name, diag.msg);
  return path;
}

/* The tree spec makes of src, written to root/name (`d9dfs convert`). */
static char *forward(const char *root, const char *name, const char *src, const char *spec) {
  d9_mount *m = must_mount(src, spec, 0, 0);
  char *path = malloc(4200);
  assert_non_null(path);
  snprintf(path, 4200, "%s/%s", root, name);
  convert_to(m, path);
  d9_mount_close(m);
  return path;
}

/* The family a shipped spec is written for, sized small (mount_specs uses
 * the same families). An unknown spec fails: add it here. */
static void params_for(const char *spec, d9_gen_params *p) {
  if (!strcmp(spec, "mixtral-to-hf-fused-experts.json") ||
      !strcmp(spec, "mixtral-to-megatron.json")) {
    d9_gen_defaults(p, "mixtral");
    p->experts = 3, p->hidden = 32, p->heads = 4, p->kv_heads = 2, p->intermediate = 24;
  } else if (!strcmp(spec, "qwen3-moe-to-hf-fused-experts.json")) {
    d9_gen_defaults(p, "qwen3_moe");
    p->experts = 4, p->hidden = 40, p->heads = 4, p->kv_heads = 2, p->intermediate = 24;
  } else if (!strcmp(spec, "deepseek-fp8-to-bf16.json")) {
    d9_gen_defaults(p, "deepseek_fp8");
    p->hidden = 200, p->heads = 4, p->kv_heads = 2, p->intermediate = 96, p->block = 64;
  } else if (!strcmp(spec, "gpt-oss-mxfp4-to-bf16.json")) {
    d9_gen_defaults(p, "gpt_oss");
    p->experts = 3;
  } else if (!strcmp(spec, "deepseek-v3-to-megatron.json")) {
    d9_gen_defaults(p, "deepseek_v3");
    p->hidden = 64, p->heads = 4, p->intermediate = 48, p->block = 32;
  } else if (!strcmp(spec, "qwen3-to-megatron.json") || !strcmp(spec, "qwen3-moe-to-megatron.json") ||
             !strcmp(spec, "phi3-to-llama.json")) {
    d9_gen_defaults(p, !strcmp(spec, "phi3-to-llama.json") ? "phi3"
                       : strstr(spec, "moe") ? "qwen3_moe" : "qwen3");
    p->hidden = 32, p->heads = 4, p->kv_heads = 2, p->intermediate = 24;
  } else if (!strcmp(spec, "gemma-to-standard-norms.json")) {
    d9_gen_defaults(p, "gemma");
  } else if (!strcmp(spec, "llama-to-megatron.json") || !strcmp(spec, "identity.json") ||
             !strcmp(spec, "cast-f32-to-bf16.json") ||
             !strcmp(spec, "nemo-automodel-combined.json") ||
             !strcmp(spec, "nemo-automodel-lora.json")) {
    d9_gen_defaults(p, "llama");
    p->heads = 8, p->kv_heads = 2, p->tied = 0, p->bias = 0;
  } else {
    fail_msg("no checkpoint family for the shipped spec %s: add it to params_for", spec);
  }
  p->layers = 2, p->vocab = 64, p->shards = 2, p->seed = 11;
  if (p->family != D9_GEN_DEEPSEEK_FP8) p->dtype = D9_F32;
  if (p->family == D9_GEN_DEEPSEEK_FP8) p->dtype = D9_BF16;
}

/* Every shipped spec: each target reads the same through every test
 * backend mode as on the CPU; the specs that compute do so in the table. */
static void test_shipped_specs(void **state) {
  (void)state;
  char *root = tu_tmpdir();
  glob_t gl;
  assert_int_equal(glob(SPEC_DIR "/*.json", 0, NULL, &gl), 0);
  assert_true(gl.gl_pathc >= 8);
  memset(rec.total, 0, sizeof rec.total);
  for (size_t i = 0; i < gl.gl_pathc; i++) {
    char *copy = strdup(gl.gl_pathv[i]);
    assert_non_null(copy);
    const char *name = basename(copy);
    d9_gen_params p;
    params_for(name, &p);
    char dir[64];
    snprintf(dir, sizeof dir, "ckpt%zu", i);
    char *src = gen(root, dir, &p);
    if (!strcmp(name, "nemo-automodel-lora.json")) { /* a DoRA adapter of that llama instead */
      d9_gen_adapter a = {.rank = 4, .targets = D9_GEN_LORA_ALL, .dora = 1, .shared_a = 1};
      d9_diag diag = {0};
      snprintf(src, 4200, "%s/adapter%zu", root, i);
      if (d9_gen_write_adapter(src, &p, &a, &diag)) fail_msg("gen adapter: %s", diag.msg);
    }
    int ncomp = run_spec(src, gl.gl_pathv[i], 0, name);
    /* and back: the spec's inverse over the tree it made (cast-f32-to-bf16
     * has none: its cast names no `from`) */
    if (strcmp(name, "cast-f32-to-bf16.json")) {
      char what[300];
      snprintf(what, sizeof what, "%s (reverse)", name);
      snprintf(dir, sizeof dir, "fwd%zu", i);
      char *fwd = forward(root, dir, src, gl.gl_pathv[i]);
      int nback = run_spec(fwd, gl.gl_pathv[i], 1, what);
      assert_true((nback > 0) == (ncomp > 0)); /* a computing step inverts to one */
      free(fwd);
    }
    /* the specs whose steps compute, and the kinds of compute they make */
    if (!strcmp(name, "deepseek-fp8-to-bf16.json") || !strcmp(name, "gemma-to-standard-norms.json") ||
        !strcmp(name, "cast-f32-to-bf16.json") || !strcmp(name, "gpt-oss-mxfp4-to-bf16.json"))
      assert_true(ncomp > 0);
    if (!strcmp(name, "identity.json") || !strcmp(name, "llama-to-megatron.json"))
      assert_int_equal(ncomp, 0);
    free(src);
    free(copy);
  }
  globfree(&gl);
  assert_true(rec.total[M_CAST] > 0);    /* cast-f32-to-bf16, deepseek */
  assert_true(rec.total[M_DEQUANT] > 0); /* deepseek */
  assert_true(rec.total[M_AFFINE] > 0);  /* gemma */
  assert_true(rec.total[M_QUANT] > 0);   /* deepseek, reversed */
  assert_true(rec.total[M_AMAX] > 0);
  assert_true(rec.total[M_MXDQ] > 0); /* gpt-oss */
  assert_true(rec.total[M_MXQ] > 0);  /* gpt-oss, reversed */
  tu_rmrf(root);
  free(root);
}

/* The members no shipped spec reaches forward (test_shipped_specs checks
 * cast, affine and fp8_dequant): transpose (2-D and a 3-D
 * permute), quant weight and scale (F32 and BF16 input, blocks that cut
 * rows and whole-row boxes), and a cast to F8_E4M3 of values beyond 448. */
static const char all_ops_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 't', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
    "  'steps': [{'op': 'transpose'}], 'output': 'model.layers.{L}.o_t'},\n"
    " {'name': 'p', 'inputs': 'model.layers.{L}.mlp.up_proj.weight',\n"
    "  'steps': [{'op': 'reshape', 'shape': [8, 12, 32]}, {'op': 'permute', 'dims': [1, 2, 0]}],\n"
    "  'output': 'model.layers.{L}.up_p'},\n"
    " {'name': 'q', 'inputs': 'model.layers.{L}.mlp.gate_proj.weight',\n"
    "  'steps': [{'op': 'quant', 'block': 5, 'out': ['w', 's']}],\n"
    "  'output': {'w': 'model.layers.{L}.gate.w', 's': 'model.layers.{L}.gate.s'}},\n"
    " {'name': 'qb', 'inputs': 'model.layers.{L}.mlp.down_proj.weight',\n"
    "  'steps': [{'op': 'cast', 'to': 'BF16'}, {'op': 'quant', 'block': 32, 'out': ['w', 's']}],\n"
    "  'output': {'w': 'model.layers.{L}.down.w', 's': 'model.layers.{L}.down.s'}},\n"
    " {'name': 'e', 'inputs': 'model.embed_tokens.weight',\n"
    "  'steps': [{'op': 'affine', 'mul': 1000}, {'op': 'cast', 'to': 'F8_E4M3'}],\n"
    "  'output': 'model.embed_tokens.weight'}]}\n";

static void test_every_member(void **state) {
  (void)state;
  char *root = tu_tmpdir();
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 2, p.hidden = 32, p.heads = 4, p.kv_heads = 2, p.intermediate = 96;
  p.vocab = 40, p.dtype = D9_F32, p.shards = 2, p.tied = 0, p.seed = 12;
  char *src = gen(root, "llama", &p);
  char spec[4300];
  snprintf(spec, sizeof spec, "%s/all.json", root);
  char *text = strdup(all_ops_spec);
  assert_non_null(text);
  for (char *c = text; *c; c++)
    if (*c == '\'') *c = '"';
  tu_write(spec, text);
  free(text);
  memset(rec.total, 0, sizeof rec.total);
  assert_true(run_spec(src, spec, 0, "all-ops") > 0);
  /* fp8_dequant, mxfp4_*: the shipped deepseek and gpt-oss specs */
  for (int m = 0; m < MEMBERS; m++)
    if (!rec.total[m] && m != M_DEQUANT && m != M_MXDQ && m != M_MXQ)
      fail_msg("the test spec never reached the backend's %s", MEMBER[m]);

  /* the saturating cast as read: |1000 x| >= 448 gives +-448, in range the
   * scalar conversion of the affine's F32 */
  built b;
  build(&b, src, spec, 0);
  const d9_target *e = NULL;
  for (int t = 0; t < b.g->ntargets; t++)
    if (!strcmp(b.g->targets[t].name, "model.embed_tokens.weight")) e = &b.g->targets[t];
  assert_non_null(e);
  const d9_src_tensor *st = d9_catalog_find(b.cat, "model.embed_tokens.weight");
  assert_non_null(st);
  int64_t n = e->node->numel, sat = 0;
  float *x = malloc((size_t)n * 4);
  uint8_t *q = malloc((size_t)n);
  assert_true(x && q);
  assert_int_equal(d9_catalog_pread(b.cat, st->shard, x, (size_t)n * 4, st->offset), 0);
  assert_int_equal(fill(&b, &test_be, e->node, 0, n, q), 0);
  for (int64_t i = 0; i < n; i++) {
    volatile float t = x[i] * 1000.0f, y = t + 0.0f; /* the affine's two roundings */
    uint8_t want = fabsf(y) >= 448.0f ? (uint8_t)(signbit(y) ? 0xfe : 0x7e) : d9_f32_to_e4m3(y);
    sat += fabsf(y) > 448.0f;
    if (q[i] != want) fail_msg("embed [%lld]: 0x%02x, want 0x%02x", (long long)i, q[i], want);
  }
  assert_true(sat > n / 4); /* the case is exercised */
  free(x);
  free(q);
  unbuild(&b);
  free(src);
  tu_rmrf(root);
  free(root);
}

/* d9_eval_backend: the CPU for auto / cpu / none, the GPU refused with the
 * reason, a bad name refused. */
static void test_pick(void **state) {
  (void)state;
  const d9_backend *be = NULL;
  d9_diag diag = {0};
  const char *cpu[] = {NULL, "auto", "cpu"};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(d9_eval_backend(cpu[i], &be, &diag), 0);
    assert_ptr_equal(be, d9_backend_cpu());
  }
  assert_int_equal(d9_eval_backend("tpu", &be, &diag), -EINVAL);
  assert_null(be);
  assert_non_null(strstr(diag.msg, "want auto, cpu or cuda[:N]"));
  d9_diag_clear(&diag);
  int r = d9_eval_backend("cuda:0", &be, &diag);
  assert_true(r == -ENODEV || r == -ENOTSUP);
  assert_null(be);
  assert_non_null(strstr(diag.msg, "-o device=cuda:0"));
}

int main(void) {
  rng_state = SEED;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pick),
      cmocka_unit_test(test_shipped_specs),
      cmocka_unit_test(test_every_member),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
