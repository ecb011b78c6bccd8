/* check.c - `d9dfs check SRC SPEC`: convert SRC forward into a temporary
 * directory, present that through the reversed spec, and compare every
 * tensor with the source: byte for byte for lossless specs; for lossy ones
 * report the lossy steps and each tensor's maximum absolute error (for an
 * MXFP4 pair X_blocks / X_scales, both U8, the error of the values they
 * encode, reported on each of the two). Mounts nothing. Needs disk for two
 * converted copies (removed afterwards).
 *
 * A dedup step keeps the first of several copies (op_copy.c); before the
 * round trip, the copies a dedup takes straight from the rule's inputs are
 * compared in the source, and any that differ from the first are named
 * (the round trip then shows them too, as differing tensors). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kernels/kernels.h"
#include "mapper/catalog.h"
#include "mapper/graph_limits.h"
#include "mapper/json_strict.h"
#include "mapper/node.h"
#include "mapper/pattern.h"
#include "mapper/spec.h"

static double decode(const unsigned char *p, d9_dtype t) {
  uint16_t h;
  float f;
  switch (t) {
    case D9_F32: memcpy(&f, p, 4); return f;
    case D9_F16: memcpy(&h, p, 2); return d9_f16_to_f32(h);
    case D9_BF16: memcpy(&h, p, 2); return d9_bf16_to_f32(h);
    case D9_F8_E4M3: return d9_e4m3_to_f32(*p);
    case D9_F8_E5M2: return d9_e5m2_to_f32(*p);
    default: return NAN;
  }
}

/* Compare tensor a of ca with b of cb; *maxerr gets the largest |x - y|
 * for float dtypes. Returns 1 if the bytes are identical, 0 if not, -errno. */
static int compare(const d9_catalog *ca, const d9_src_tensor *a, const d9_catalog *cb,
                   const d9_src_tensor *b, double *maxerr) {
  enum { CHUNK = 1 << 20 };
  unsigned char *x = malloc(CHUNK), *y = malloc(CHUNK);
  int same = 1, rc = 0;
  size_t es = d9_dtype_size(a->dtype);
  *maxerr = 0;
  for (uint64_t off = 0; x && y && off < a->nbytes; off += CHUNK) {
    size_t n = a->nbytes - off < CHUNK ? (size_t)(a->nbytes - off) : CHUNK;
    if ((rc = d9_catalog_pread(ca, a->shard, x, n, a->offset + off)) ||
        (rc = d9_catalog_pread(cb, b->shard, y, n, b->offset + off)))
      break;
    if (memcmp(x, y, n)) {
      same = 0;
      for (size_t i = 0; i + es <= n; i += es) {
        double d = fabs(decode(x + i, a->dtype) - decode(y + i, a->dtype));
        if (d > *maxerr || d != d) *maxerr = d != d ? INFINITY : d;
      }
    }
  }
  if (!x || !y) rc = -ENOMEM;
  free(x);
  free(y);
  return rc ? rc : same;
}

/* The scales tensor of an MXFP4 blocks tensor t ("X_blocks", U8 [..., G, B])
 * in c: "X_scales", U8 [..., G]; NULL if t is not one. */
static const d9_src_tensor *mxfp4_scales(const d9_catalog *c, const d9_src_tensor *t) {
  size_t n = strlen(t->name);
  char name[1024];
  if (t->dtype != D9_U8 || t->ndim < 2 || n < 7 || n >= sizeof name ||
      strcmp(t->name + n - 7, "_blocks"))
    return NULL;
  memcpy(name, t->name, n - 7);
  strcpy(name + n - 7, "_scales");
  const d9_src_tensor *s = d9_catalog_find(c, name);
  if (!s || s->dtype != D9_U8 || s->ndim != t->ndim - 1 ||
      memcmp(s->shape, t->shape, sizeof(int64_t) * (size_t)s->ndim))
    return NULL;
  return s;
}

/* The blocks tensor of an MXFP4 scales tensor t ("X_scales"), else NULL. */
static const d9_src_tensor *mxfp4_blocks(const d9_catalog *c, const d9_src_tensor *t) {
  size_t n = strlen(t->name);
  char name[1024];
  if (t->dtype != D9_U8 || n < 7 || n >= sizeof name || strcmp(t->name + n - 7, "_scales"))
    return NULL;
  memcpy(name, t->name, n - 7);
  strcpy(name + n - 7, "_blocks");
  const d9_src_tensor *b = d9_catalog_find(c, name);
  return b && mxfp4_scales(c, b) == t ? b : NULL;
}

/* The largest |x - y| between the MXFP4 values of (ba, sa) in ca and (bb, sb)
 * in cb (same shapes), equal values (Inf included) counting 0. 0 or -errno. */
static int mxfp4_error(const d9_catalog *ca, const d9_src_tensor *ba, const d9_src_tensor *sa,
                       const d9_catalog *cb, const d9_src_tensor *bb, const d9_src_tensor *sb,
                       double *maxerr) {
  enum { GROUPS = 4096 };
  int64_t B = ba->shape[ba->ndim - 1], ng = (int64_t)sa->nbytes;
  unsigned char *x = malloc((size_t)(GROUPS * B)), *y = malloc((size_t)(GROUPS * B));
  unsigned char xs[GROUPS], ys[GROUPS];
  int rc = x && y ? 0 : -ENOMEM;
  *maxerr = 0;
  for (int64_t g = 0; !rc && g < ng; g += GROUPS) {
    size_t k = (size_t)(ng - g < GROUPS ? ng - g : GROUPS), nb = k * (size_t)B;
    uint64_t off = (uint64_t)(g * B);
    if ((rc = d9_catalog_pread(ca, ba->shard, x, nb, ba->offset + off)) ||
        (rc = d9_catalog_pread(cb, bb->shard, y, nb, bb->offset + off)) ||
        (rc = d9_catalog_pread(ca, sa->shard, xs, k, sa->offset + (uint64_t)g)) ||
        (rc = d9_catalog_pread(cb, sb->shard, ys, k, sb->offset + (uint64_t)g)))
      break;
    for (size_t v = 0; v < 2 * nb; v++) {
      int cx = v % 2 ? x[v / 2] >> 4 : x[v / 2] & 15, cy = v % 2 ? y[v / 2] >> 4 : y[v / 2] & 15;
      double a = d9_mxfp4_value((uint8_t)cx, xs[v / (2 * (size_t)B)]);
      double b = d9_mxfp4_value((uint8_t)cy, ys[v / (2 * (size_t)B)]);
      double d = a == b ? 0 : fabs(a - b);
      if (d > *maxerr) *maxerr = d;
    }
  }
  free(x);
  free(y);
  return rc;
}

/* The dedup steps of rule r on rule inputs: for each instance in source c,
 * compare every dedup input with the first. Returns the number of copies
 * that differ, or -errno. */
static int rule_copies_differ(const d9_spec *s, const d9_rule *r, const d9_catalog *c) {
  int ndiff = 0;
  for (int k = 0; k < r->nsteps; k++) {
    const d9_step *st = &r->steps[k];
    if (st->kind != D9_STEP_DEDUP) continue;
    int nin = st->nin ? st->nin : k == 0 ? r->ninputs : 0;
    const char *const *in = st->nin ? st->in : r->in_names;
    int idx[64];
    if (nin < 2 || nin > 64) continue;
    for (int i = 0; i < nin; i++) { /* each dedup input as a rule input index, or -1 */
      idx[i] = -1;
      for (int j = 0; j < r->ninputs; j++)
        if (!strcmp(in[i], r->in_names[j])) idx[i] = j;
    }
    for (int t = 0; t < c->ntensors; t++) {
      d9_caps caps = {0};
      const d9_src_tensor *drv = &c->tensors[t], *x[64];
      if (!d9_pattern_match(r->in_pats[0], drv->name, &caps) || d9_graph_skips(s, r, drv->name))
        continue;
      int ok = 1;
      for (int i = 0; i < nin && ok; i++) {
        char name[D9_NAME_MAX], miss[D9_CAP_NAME_MAX];
        ok = idx[i] >= 0 &&
             d9_pattern_fill(r->in_pats[idx[i]], &caps, name, sizeof name, miss) >= 0 &&
             (x[i] = d9_catalog_find(c, name)) != NULL;
      }
      for (int i = 1; ok && i < nin; i++) {
        double err;
        int same = x[i]->nbytes == x[0]->nbytes && x[i]->dtype == x[0]->dtype
                       ? compare(c, x[0], c, x[i], &err) : (err = INFINITY, 0);
        if (same < 0) return same;
        if (!same) {
          printf("copies differ: %s: '%s' is not '%s' (max abs error %g); the dedup keeps the "
                 "first\n", st->where, x[i]->name, x[0]->name, err);
          ndiff++;
        }
      }
    }
  }
  return ndiff;
}

/* Every dedup step's copies in source src (spec file spec_path). Returns
 * the number that differ, or -1 with a message on stderr. */
static int copies_differ(const char *spec_path, const d9_catalog *c) {
  d9_diag diag = {0};
  char *text = NULL;
  size_t len;
  d9_spec *s = NULL;
  int n = 0;
  if (d9_read_small_file(AT_FDCWD, spec_path, 64 << 20, &text, &len, &diag) ||
      d9_spec_parse(text, len, spec_path, &s, &diag)) {
    fprintf(stderr, "d9dfs: check: %s\n", diag.msg);
    free(text);
    return -1;
  }
  for (int i = 0; i < s->nrules && n >= 0; i++) {
    int rc = rule_copies_differ(s, &s->rules[i], c);
    if (rc < 0) fprintf(stderr, "d9dfs: check: %s: %s\n", spec_path, strerror(-rc));
    n = rc < 0 ? -1 : n + rc;
  }
  d9_spec_destroy(s);
  free(text);
  return n;
}

int d9_cli_check(const d9_mount_opts *base, const char *src, const char *spec) {
  char tmpl[] = "/tmp/d9dfs-check.XXXXXX", fwd_dir[4200], rev_dir[4200];
  d9_mount_opts o = *base;
  d9_diag diag = {0};
  d9_mount *fwd = NULL, *rv = NULL;
  d9_catalog *cs = NULL, *cr = NULL;
  int rc = 1, lossy = 0;
  if (!mkdtemp(tmpl)) {
    fprintf(stderr, "d9dfs: check: %s\n", strerror(errno));
    return 1;
  }
  snprintf(fwd_dir, sizeof fwd_dir, "%s/forward", tmpl);
  snprintf(rev_dir, sizeof rev_dir, "%s/reversed", tmpl);
  o.src_dir = src, o.spec_path = spec, o.reverse = 0;
  if (d9_mount_open(&o, &fwd, &diag)) goto diag_out;
  if (d9_cli_convert(fwd, fwd_dir, NULL)) goto out;
  int ignored = d9_mount_nignored(fwd), shadowed = d9_mount_nshadowed(fwd);
  if (ignored) printf("lossy: the spec ignores %d source tensor%s\n", ignored, ignored == 1 ? "" : "s");
  if (shadowed)
    printf("lossy: %d tensor%s present although the tie flag is set; --reverse drops %s\n",
           shadowed, shadowed == 1 ? " is" : "s are", shadowed == 1 ? "it" : "them");
  o.src_dir = fwd_dir, o.reverse = 1;
  if (d9_mount_open(&o, &rv, &diag)) goto diag_out;
  lossy = d9_mount_nlossy(rv) + ignored + shadowed;
  for (int i = 0; i < d9_mount_nlossy(rv); i++) printf("lossy step: %s\n", d9_mount_lossy(rv, i));
  if (d9_cli_convert(rv, rev_dir, NULL)) goto out;
  if (d9_catalog_open_flags(src, 0, &cs, &diag) || d9_catalog_open_flags(rev_dir, 0, &cr, &diag)) goto diag_out;
  int ncopies = copies_differ(spec, cs);
  if (ncopies < 0) goto out;
  int identical = 0, differ = 0, missing = 0;
  double worst = 0;
  for (int i = 0; i < cs->ntensors; i++) {
    const d9_src_tensor *a = &cs->tensors[i], *b = d9_catalog_find(cr, a->name);
    char s1[160], s2[160];
    if (!b) {
      printf("missing after the round trip: %s\n", a->name);
      missing++;
      continue;
    }
    if (a->dtype != b->dtype || a->ndim != b->ndim ||
        memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim)) {
      printf("differs: %s: %s %s became %s %s\n", a->name, d9_dtype_name(a->dtype),
             d9_shape_str(a->shape, a->ndim, s1, sizeof s1), d9_dtype_name(b->dtype),
             d9_shape_str(b->shape, b->ndim, s2, sizeof s2));
      differ++;
      continue;
    }
    double err;
    int same = compare(cs, a, cr, b, &err);
    /* an MXFP4 pair: the error of the values, not of the bytes */
    const d9_src_tensor *ab = mxfp4_blocks(cs, a), *as = mxfp4_scales(cs, a);
    const d9_src_tensor *pa = ab ? ab : a, *sa = ab ? a : as;
    const d9_src_tensor *pb = d9_catalog_find(cr, pa->name), *sb = NULL;
    if (pb) sb = mxfp4_scales(cr, pb);
    if (same == 0 && (ab || as) && sb && pb->dtype == pa->dtype && pb->ndim == pa->ndim &&
        !memcmp(pb->shape, pa->shape, sizeof(int64_t) * (size_t)pa->ndim))
      same = mxfp4_error(cs, pa, sa, cr, pb, sb, &err);
    if (same < 0) {
      fprintf(stderr, "d9dfs: check: %s: %s\n", a->name, strerror(-same));
      goto out;
    }
    if (same) {
      identical++;
    } else {
      differ++;
      if (err > worst || err != err) worst = err;
      printf("%s: %s: max abs error %g\n", lossy ? "lossy" : "differs", a->name, err);
    }
  }
  int extra = 0;
  for (int i = 0; i < cr->ntensors; i++)
    if (!d9_catalog_find(cs, cr->tensors[i].name)) {
      printf("extra after the round trip: %s\n", cr->tensors[i].name);
      extra++;
    }
  printf("check: %d source tensors, %d byte-identical after forward and reverse, %d differ, "
         "%d missing, %d extra%s\n", cs->ntensors, identical, differ, missing, extra,
         lossy ? "" : " (lossless spec)");
  if (lossy) printf("check: lossy spec (%d lossy step%s); largest error %g\n", lossy,
                    lossy == 1 ? "" : "s", worst);
  if (ncopies)
    printf("check: %d cop%s kept once by a dedup step differ%s from the first in the source\n",
           ncopies, ncopies == 1 ? "y" : "ies", ncopies == 1 ? "s" : "");
  /* lossy specs may differ in values, but only ignored or tie-shadowed
   * tensors may go missing, and nothing may appear */
  rc = (!lossy && differ) || missing > ignored + shadowed || extra || ncopies ? 1 : 0;
  goto out;
diag_out:
  fprintf(stderr, "d9dfs: check: %s\n", diag.msg);
out:
  d9_catalog_close(cs);
  d9_catalog_close(cr);
  d9_mount_close(fwd);
  d9_mount_close(rv);
  char cmd[4300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  if (system(cmd)) fprintf(stderr, "d9dfs: check: could not remove %s\n", tmpl);
  return rc;
}
