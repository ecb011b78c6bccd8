/* spec_reverse.c - the inverse of a spec, for `d9dfs mount --reverse` and
 * `d9dfs check`: a checkpoint in the spec's target layout is presented in
 * its source layout.
 *
 * Each rule is inverted whole: its outputs become the inputs, its inputs
 * the outputs, and its steps run backwards, each replaced by its inverse,
 * which the op's table entry makes (d9_op_def.invert, op_table.h) as typed
 * arguments: cast to/from swapped, concat <-> split/chunk, stack <->
 * unstack, qkv <-> qkv_split, and so on.
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

#include "op_table.h"
#include "spec.h"

typedef struct rev {
  d9_spec *s;      /* the reversed spec being built */
  const cJSON *config; /* for step counts given as expressions; may be NULL */
  d9_diag *diag;
} rev;

static int lossy(rev *r, const char *where, const char *why) {
  const char *m = d9_arena_printf(r->s->arena, "%s: %s", where, why);
  if (!m) return -ENOMEM;
  r->s->lossy[r->s->nlossy++] = m; /* room for one per step */
  return 0;
}

/* How many values step st makes (needed to name defaults). -1 if only
 * known from shapes. */
static int nouts(const d9_spec *s, const cJSON *config, const d9_step *st) {
  if (st->nout) return st->nout;
  if (st->def->nout) return st->def->nout;
  return st->def->nouts(s, config, st);
}

/* The inverse of forward step st (which had nin inputs) into *rs: its op
 * and typed arguments from the op table's invert. 0 or -errno with diag. */
static int inverse_op(rev *r, const d9_step *st, int nin, d9_step *rs) {
  d9_op_inv inv = {.arena = r->s->arena, .nin = nin, .kind = D9_STEP_COUNT};
  inv.args.to = inv.args.from = D9_DTYPE_INVALID;
  int rc = st->def->invert(st, &inv);
  if (rc == -ENOMEM) return d9_diag_fail(r->diag, ENOMEM, "%s: out of memory", r->s->path);
  if (rc || !d9_op_get(inv.kind))
    return d9_diag_fail(r->diag, EINVAL, "%s: %s: %s", r->s->path, st->where,
                        inv.refuse ? inv.refuse : "this step has no inverse");
  d9_step_args *a = d9_arena_alloc(r->s->arena, sizeof *a);
  if (!a) return d9_diag_fail(r->diag, ENOMEM, "%s: out of memory", r->s->path);
  *a = inv.args;
  rs->def = d9_op_get(inv.kind);
  rs->kind = inv.kind;
  rs->op = rs->def->name;
  rs->args = a;
  if (inv.lossy && (rc = lossy(r, st->where, inv.lossy)))
    return d9_diag_fail(r->diag, ENOMEM, "%s: out of memory", r->s->path);
  return 0;
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
  const char ***ins = d9_arena_calloc(a, (size_t)fr->nsteps + 1, sizeof *ins);
  const char ***outs = d9_arena_calloc(a, (size_t)fr->nsteps + 1, sizeof *outs);
  int *nin = d9_arena_calloc(a, (size_t)fr->nsteps + 1, sizeof *nin);
  int *nout = d9_arena_calloc(a, (size_t)fr->nsteps + 1, sizeof *nout);
  if (!ins || !outs || !nin || !nout) return -ENOMEM;
  const char **cur = fr->in_names;
  int ncur = fr->ninputs;
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
    d9_step *rs = &rr->steps[i];
    int rc = inverse_op(r, st, nin[k], rs);
    if (rc) return rc;
    rs->where = d9_arena_printf(a, "%s reversed", st->where);
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
  rev r = {s, config, diag};
  int rc = -ENOMEM, nsteps = 0;
  s->root = cJSON_Duplicate(f->root, 1);
  if (!s->root) goto fail;
  for (int i = 0; i < f->nrules; i++) nsteps += f->rules[i].nsteps;
  if (!(s->lossy = d9_arena_calloc(s->arena, (size_t)nsteps + 1, sizeof *s->lossy))) goto fail;
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
