/* spec_reverse.c - the inverse of a spec, for `d9dfs mount --reverse` and
 * `d9dfs check`: a checkpoint in the spec's target layout is presented in
 * its source layout.
 *
 * Each rule is inverted whole: its outputs become the inputs, its inputs
 * the outputs, and its steps run backwards, each replaced by its inverse
 * (cast to/from swapped, concat <-> split/chunk, stack <-> unstack, qkv <->
 * qkv_split, reshape with from_shape, squeeze <-> unsqueeze, transposes
 * and permutes inverted, interleave <-> deinterleave, dequant <-> quant,
 * affine x*a+b <-> x/a - b/a, pad <-> truncate, rope half <-> interleaved).
 * A rule's "over" becomes "unstack" and the other way round; a tied alias
 * becomes "drop the alias when the flag is set". Steps without an inverse
 * (slice, a cast without "from", a reshape without "from_shape") make the
 * reversal fail, naming the step. Lossy inverses are listed in
 * spec->lossy. Tensors the forward spec ignored cannot come back; the
 * forward graph counts them (d9_graph.nignored).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

typedef struct rev {
  d9_spec *s;      /* the reversed spec being built */
  const cJSON *config; /* for step counts given as expressions; may be NULL */
  cJSON *store;    /* owns the synthesized step objects (in s->root) */
  d9_diag *diag;
} rev;

static int lossy(rev *r, const char *where, const char *why) {
  if (r->s->nlossy >= D9_LOSSY_MAX) return 0;
  const char *m = d9_arena_printf(r->s->arena, "%s: %s", where, why);
  if (!m) return -ENOMEM;
  r->s->lossy[r->s->nlossy++] = m;
  return 0;
}

static const cJSON *arg(const d9_step *st, const char *k) {
  return cJSON_GetObjectItemCaseSensitive(st->j, k);
}

static int copy_arg(cJSON *o, const d9_step *st, const char *from, const char *to) {
  const cJSON *v = arg(st, from);
  if (!v) return 0;
  cJSON *d = cJSON_Duplicate(v, 1);
  return d && cJSON_AddItemToObject(o, to, d) ? 0 : -ENOMEM;
}

/* Can `to` hold every value of `from` exactly? Only then is casting back
 * lossless. E5M2 is a truncated F16; E4M3 (max 448, smallest subnormal
 * 2^-9) fits F16 and BF16; F16 and BF16 do not fit each other (range,
 * precision). */
static int widening(const char *from, const char *to) {
  static const char *const ok[][2] = {
      {"F8_E4M3", "F16"}, {"F8_E4M3", "BF16"}, {"F8_E4M3", "F32"}, {"F8_E5M2", "F16"},
      {"F8_E5M2", "BF16"}, {"F8_E5M2", "F32"}, {"F16", "F32"}, {"BF16", "F32"}};
  if (!strcmp(from, to)) return 1;
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    if (!strcmp(ok[i][0], from) && !strcmp(ok[i][1], to)) return 1;
  return 0;
}

/* How many values step st makes (needed to name defaults). -1 if only
 * known from shapes. */
static int nouts(const d9_spec *s, const cJSON *config, const d9_step *st) {
  if (st->nout) return st->nout;
  switch (st->kind) {
    case D9_STEP_QKV_SPLIT: return 3;
    case D9_STEP_QUANT: return 2;
    case D9_STEP_CHUNK:
    case D9_STEP_DEINTERLEAVE: {
      int64_t n;
      const cJSON *v = arg(st, st->kind == D9_STEP_CHUNK ? "chunks" : "parts");
      if (d9_spec_int(s, config, v, st->where, &n, NULL) || n < 1 || n > 32) return -1;
      return (int)n;
    }
    case D9_STEP_SPLIT: {
      const cJSON *v = arg(st, "sizes");
      return cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    }
    case D9_STEP_UNSTACK: return -1;
    default: return 1;
  }
}

/* The inverse step object of st (op and arguments), or NULL with diag set. */
static cJSON *inverse_op(rev *r, const d9_step *st, int nin) {
  cJSON *o = cJSON_CreateObject();
  const char *op = NULL, *where = st->where;
  int rc = 0;
  if (!o) return NULL;
  switch (st->kind) {
    case D9_STEP_CAST: {
      const cJSON *from = arg(st, "from"), *to = arg(st, "to");
      if (!cJSON_IsString(from)) {
        d9_diag_fail(r->diag, EINVAL, "%s: %s: cast has no inverse without \"from\" (the source dtype)",
                     r->s->path, where);
        goto fail;
      }
      if (!cJSON_IsString(to)) { /* the forward build refuses it too, later */
        d9_diag_fail(r->diag, EINVAL, "%s: %s: cast needs \"to\" (a dtype name)", r->s->path,
                     where);
        goto fail;
      }
      op = "cast";
      cJSON_AddStringToObject(o, "to", from->valuestring);
      cJSON_AddStringToObject(o, "from", to->valuestring);
      if (!widening(from->valuestring, to->valuestring))
        rc = lossy(r, where, "the cast cannot hold every source value (rounded, or out of range)");
      break;
    }
    case D9_STEP_CONCAT:
      /* the parts' sizes are not in the concatenated tensor: the spec gives
       * them (and the forward build checks them) */
      if (!arg(st, "sizes")) {
        d9_diag_fail(r->diag, EINVAL, "%s: %s: concat has no inverse without \"sizes\" (the "
                     "size of each part along dim)", r->s->path, where);
        goto fail;
      }
      op = "split";
      rc = copy_arg(o, st, "sizes", "sizes") || copy_arg(o, st, "dim", "dim");
      break;
    case D9_STEP_STACK: op = "unstack", rc = copy_arg(o, st, "dim", "dim"); break;
    case D9_STEP_UNSTACK: op = "stack", rc = copy_arg(o, st, "dim", "dim"); break;
    case D9_STEP_CHUNK:
    case D9_STEP_SPLIT: op = "concat", rc = copy_arg(o, st, "dim", "dim"); break;
    case D9_STEP_QKV:
    case D9_STEP_QKV_SPLIT:
      op = st->kind == D9_STEP_QKV ? "qkv_split" : "qkv";
      rc = copy_arg(o, st, "heads", "heads") || copy_arg(o, st, "groups", "groups") ||
           copy_arg(o, st, "head_dim", "head_dim");
      break;
    case D9_STEP_RESHAPE:
      if (!arg(st, "from_shape")) {
        d9_diag_fail(r->diag, EINVAL, "%s: %s: reshape has no inverse without \"from_shape\"",
                     r->s->path, where);
        goto fail;
      }
      op = "reshape";
      rc = copy_arg(o, st, "from_shape", "shape") || copy_arg(o, st, "shape", "from_shape");
      break;
    case D9_STEP_SQUEEZE: op = "unsqueeze", rc = copy_arg(o, st, "dim", "dim"); break;
    case D9_STEP_UNSQUEEZE: op = "squeeze", rc = copy_arg(o, st, "dim", "dim"); break;
    case D9_STEP_TRANSPOSE:
      op = "transpose";
      rc = copy_arg(o, st, "dim0", "dim0") || copy_arg(o, st, "dim1", "dim1");
      break;
    case D9_STEP_PERMUTE: {
      const cJSON *d = arg(st, "dims"), *e;
      int n = cJSON_GetArraySize(d), inv[16], k = 0;
      if (!cJSON_IsArray(d) || n > 16) goto bad;
      for (int i = 0; i < n; i++) inv[i] = -1;
      cJSON_ArrayForEach(e, d) {
        int v = e->valueint < 0 ? e->valueint + n : e->valueint;
        if (v < 0 || v >= n) goto bad;
        inv[v] = k++;
      }
      op = "permute";
      cJSON *a = cJSON_AddArrayToObject(o, "dims");
      for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(inv[i]));
      break;
    }
    case D9_STEP_INTERLEAVE:
      op = "deinterleave";
      cJSON_AddNumberToObject(o, "parts", nin);
      rc = copy_arg(o, st, "group", "group");
      break;
    case D9_STEP_DEINTERLEAVE: op = "interleave", rc = copy_arg(o, st, "group", "group"); break;
    case D9_STEP_DEQUANT:
      op = "quant", rc = copy_arg(o, st, "block", "block");
      rc = rc ? rc : lossy(r, where, "dequantised weights are quantised back to FP8 (rounded)");
      break;
    case D9_STEP_QUANT:
      op = "dequant", rc = copy_arg(o, st, "block", "block");
      rc = rc ? rc : lossy(r, where, "quantisation error is not undone");
      break;
    case D9_STEP_AFFINE: {
      const cJSON *m = arg(st, "mul"), *a = arg(st, "add");
      double mul = cJSON_IsNumber(m) ? m->valuedouble : 1.0, add = cJSON_IsNumber(a) ? a->valuedouble : 0.0;
      if (mul == 0) goto bad;
      op = "affine";
      cJSON_AddNumberToObject(o, "mul", 1.0 / mul);
      cJSON_AddNumberToObject(o, "add", -add / mul);
      rc = lossy(r, where, "x*a+b is rounded to the dtype each way");
      break;
    }
    case D9_STEP_PAD:
      if (!arg(st, "from_rows")) {
        d9_diag_fail(r->diag, EINVAL, "%s: %s: pad has no inverse without \"from_rows\"",
                     r->s->path, where);
        goto fail;
      }
      op = "truncate", rc = copy_arg(o, st, "from_rows", "rows") || copy_arg(o, st, "rows", "from_rows");
      break;
    case D9_STEP_TRUNCATE:
      if (!arg(st, "from_rows")) {
        d9_diag_fail(r->diag, EINVAL, "%s: %s: truncate has no inverse without \"from_rows\"",
                     r->s->path, where);
        goto fail;
      }
      op = "pad", rc = copy_arg(o, st, "from_rows", "rows") || copy_arg(o, st, "rows", "from_rows");
      rc = rc ? rc : lossy(r, where, "truncated rows come back as zeros");
      break;
    case D9_STEP_ROPE: {
      const cJSON *to = arg(st, "to");
      op = "rope";
      rc = copy_arg(o, st, "heads", "heads");
      cJSON_AddStringToObject(o, "to", cJSON_IsString(to) && !strcmp(to->valuestring, "half")
                                           ? "interleaved" : "half");
      break;
    }
    case D9_STEP_SLICE:
      d9_diag_fail(r->diag, EINVAL, "%s: %s: slice drops data and has no inverse", r->s->path, where);
      goto fail;
    default:
      goto bad;
  }
  if (rc) goto oom;
  cJSON_AddStringToObject(o, "op", op);
  return o;
bad:
  d9_diag_fail(r->diag, EINVAL, "%s: %s: this step has no inverse", r->s->path, where);
  goto fail;
oom:
  d9_diag_fail(r->diag, ENOMEM, "%s: out of memory", r->s->path);
fail:
  cJSON_Delete(o);
  return NULL;
}

/* Names as a cJSON array of strings. */
static cJSON *names_json(const char *const *v, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
  return a;
}

/* Is capture `name` (len bytes) written {name*} in any of pats? */
static int any_capture(const char *const *pats, int n, const char *name, size_t len) {
  char want[48];
  if (len > 40) return 0;
  snprintf(want, sizeof want, "{%.*s*}", (int)len, name);
  for (int i = 0; i < n; i++)
    if (strstr(pats[i], want)) return 1;
  return 0;
}

/* An output pattern of the forward rule as an input pattern of the reverse
 * one: a capture that spans dots in the forward inputs ({X*}) must span
 * dots when matching too, so "{X}" becomes "{X*}". */
static const char *as_input(rev *r, const d9_rule *fr, const char *pat) {
  char out[2048];
  size_t o = 0;
  for (const char *p = pat; *p && o + 48 < sizeof out;) {
    if (p[0] == '{' && p[1] != '{') {
      const char *e = strchr(p, '}');
      if (e && e[-1] != '*' && any_capture(fr->in_pats, fr->ninputs, p + 1, (size_t)(e - p - 1))) {
        o += (size_t)snprintf(out + o, sizeof out - o, "%.*s*}", (int)(e - p), p);
        p = e + 1;
        continue;
      }
    }
    out[o++] = *p++;
  }
  out[o] = 0;
  return d9_arena_strdup(r->s->arena, out);
}

static int reverse_rule(rev *r, const d9_spec *f, const d9_rule *fr, d9_rule *rr) {
  d9_arena *a = r->s->arena;
  char buf[64];
  /* name every value the forward rule passes along */
  enum { MAXV = 64 };
  const char **ins[MAXV], **outs[MAXV];
  int nin[MAXV], nout[MAXV];
  const char **cur = fr->in_names;
  int ncur = fr->ninputs;
  if (fr->nsteps > MAXV) return d9_diag_fail(r->diag, EINVAL, "%s: %s: too many steps", f->path, fr->where);
  for (int k = 0; k < fr->nsteps; k++) {
    const d9_step *st = &fr->steps[k];
    ins[k] = st->nin ? st->in : cur;
    nin[k] = st->nin ? st->nin : ncur;
    int no = nouts(f, r->config, st);
    if (no < 0)
      return d9_diag_fail(r->diag, EINVAL, "%s: %s: name this step's outputs (\"out\") to reverse it",
                          f->path, st->where);
    const char **o = d9_arena_calloc(a, (size_t)no + 1, sizeof *o);
    if (!o) return -ENOMEM;
    for (int j = 0; j < no; j++) {
      snprintf(buf, sizeof buf, "_s%d_%d", k, j);
      o[j] = st->nout ? st->out[j] : d9_arena_strdup(a, buf);
      if (!o[j]) return -ENOMEM;
    }
    outs[k] = o, nout[k] = no;
    cur = o, ncur = no;
  }
  *rr = (d9_rule){0};
  rr->name = d9_arena_printf(a, "%s reversed", fr->name);
  rr->where = d9_arena_printf(a, "%s reversed", fr->where);
  /* inputs: the forward outputs */
  rr->ninputs = fr->nout;
  rr->in_names = d9_arena_calloc(a, (size_t)fr->nout + 1, sizeof(char *));
  rr->in_pats = d9_arena_calloc(a, (size_t)fr->nout + 1, sizeof(char *));
  if (!rr->name || !rr->where || !rr->in_names || !rr->in_pats) return -ENOMEM;
  for (int o = 0; o < fr->nout; o++) {
    const char *vn = fr->out_names[o];
    if (!vn) {
      if (ncur != 1)
        return d9_diag_fail(r->diag, EINVAL, "%s: %s: cannot reverse an unnamed output of %d values",
                            f->path, fr->where, ncur);
      vn = cur[0];
    }
    rr->in_names[o] = vn;
    if (!(rr->in_pats[o] = as_input(r, fr, fr->out_pats[o]))) return -ENOMEM;
  }
  /* outputs: the forward inputs */
  rr->nout = fr->ninputs;
  rr->out_names = fr->in_names;
  rr->out_pats = fr->in_pats;
  /* steps, backwards */
  rr->nsteps = fr->nsteps;
  rr->steps = d9_arena_calloc(a, (size_t)fr->nsteps + 1, sizeof *rr->steps);
  if (!rr->steps) return -ENOMEM;
  for (int k = fr->nsteps - 1, i = 0; k >= 0; k--, i++) {
    const d9_step *st = &fr->steps[k];
    cJSON *o = inverse_op(r, st, nin[k]);
    if (!o) return -EINVAL;
    cJSON_AddItemToObject(o, "in", names_json(outs[k], nout[k]));
    cJSON_AddItemToObject(o, "out", names_json(ins[k], nin[k]));
    cJSON_AddItemToArray(r->store, o);
    d9_step *rs = &rr->steps[i];
    rs->kind = D9_STEP_COUNT;
    const cJSON *opn = cJSON_GetObjectItemCaseSensitive(o, "op");
    for (int kk = 0; kk < D9_STEP_COUNT; kk++)
      if (!strcmp(d9_step_name((d9_step_kind)kk), opn->valuestring)) rs->kind = (d9_step_kind)kk;
    rs->op = opn->valuestring;
    rs->where = d9_arena_printf(a, "%s reversed", st->where);
    rs->j = o;
    rs->nin = nout[k], rs->in = outs[k];
    rs->nout = nin[k], rs->out = ins[k];
    if (!rs->where) return -ENOMEM;
  }
  rr->required = 0;
  rr->over = fr->unstack;
  rr->unstack = fr->over;
  rr->drop_if = fr->tied_if; /* a tied alias: drop it when the flag is set */
  rr->nexclude = fr->nexclude;
  rr->exclude = fr->exclude;
  return 0;
}

int d9_spec_reverse(const d9_spec *f, const cJSON *config, d9_spec **out, d9_diag *diag) {
  d9_spec *s = calloc(1, sizeof *s);
  if (!s || !(s->arena = d9_arena_create())) {
    free(s);
    return d9_diag_fail(diag, ENOMEM, "%s: out of memory", f->path);
  }
  rev r = {s, config, NULL, diag};
  int rc = -ENOMEM;
  s->root = cJSON_Duplicate(f->root, 1);
  if (!s->root || !(r.store = cJSON_AddArrayToObject(s->root, "__inverse_steps"))) goto fail;
  s->path = d9_arena_printf(s->arena, "%s (reversed)", f->path);
  if (!s->path) goto fail;
  s->passthrough = f->passthrough;
  s->strict = f->strict;
  s->lenient = f->lenient;
  s->max_shard_size = f->max_shard_size;
  s->single_file = f->single_file;
  s->ncopy = f->ncopy;
  s->copy = f->copy;
  s->reversed = 1;
  s->nrules = f->nrules;
  s->rules = d9_arena_calloc(s->arena, (size_t)f->nrules + 1, sizeof *s->rules);
  if (!s->rules) goto fail;
  for (int i = 0; i < f->nrules; i++)
    if ((rc = reverse_rule(&r, f, &f->rules[i], &s->rules[i]))) goto fail;
  *out = s;
  return 0;
fail:
  if (rc == -ENOMEM) d9_diag_fail(diag, ENOMEM, "%s: out of memory", f->path);
  d9_spec_destroy(s);
  return rc ? rc : -EINVAL;
}
