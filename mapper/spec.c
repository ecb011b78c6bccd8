#include "spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applies.h"
#include "config_patch.h"
#include "json_strict.h"
#include "op_table.h"
#include "st_header.h"
#include "expr.h"
#include "pattern.h"

/* Every key of obj must be in allowed (NULL-terminated). */
static int check_keys(const cJSON *obj, const char *const *allowed, int nallowed,
                      const char *path, const char *where, d9_diag *diag) {
  const cJSON *e;
  cJSON_ArrayForEach(e, obj) {
    int ok = 0;
    for (int i = 0; i < nallowed && allowed[i]; i++)
      if (!strcmp(e->string, allowed[i])) ok = 1;
    if (!ok)
      return d9_diag_fail(diag, EINVAL, "%s: %s: unknown key '%s'", path, where, e->string);
  }
  return 0;
}

static const char *str_or_null(const cJSON *v) {
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A string or an array of strings into a (n, list). */
static int name_list(d9_spec *s, const cJSON *v, const char *where, const char *key,
                     int *n, const char ***list, d9_diag *diag) {
  if (!v) return 0;
  int cnt = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
  if (cnt <= 0)
    return d9_diag_fail(diag, EINVAL, "%s: %s: '%s' must be a name or a non-empty list of names",
                        s->path, where, key);
  *list = d9_arena_calloc(s->arena, (size_t)cnt, sizeof(char *));
  if (!*list) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
  if (cJSON_IsString(v)) {
    (*list)[0] = v->valuestring;
  } else {
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
      if (!cJSON_IsString(e))
        return d9_diag_fail(diag, EINVAL, "%s: %s: '%s'[%d] is not a string", s->path,
                            where, key, i);
      (*list)[i++] = e->valuestring;
    }
  }
  *n = cnt;
  return 0;
}

static int parse_parallel(d9_spec *s, const cJSON *j, const char *where, int need_pattern,
                          d9_parallel *p, d9_diag *diag);

/* A step: its op's table entry decodes the arguments (op_table.h). */
static int parse_step(d9_spec *s, const cJSON *j, const char *where, d9_step *st,
                      d9_diag *diag) {
  if (!cJSON_IsObject(j))
    return d9_diag_fail(diag, EINVAL, "%s: %s: a step must be an object", s->path, where);
  const char *op = str_or_null(cJSON_GetObjectItemCaseSensitive(j, "op"));
  if (!op) return d9_diag_fail(diag, EINVAL, "%s: %s: missing \"op\"", s->path, where);
  const d9_op_def *def = d9_op_find(op);
  if (!def) return d9_diag_fail(diag, EINVAL, "%s: %s: unknown op '%s'", s->path, where, op);
  d9_step_args *args = d9_arena_alloc(s->arena, sizeof *args);
  if (!args) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
  int rc;
  if ((rc = name_list(s, cJSON_GetObjectItemCaseSensitive(j, "in"), where, "in", &st->nin,
                      &st->in, diag)) ||
      (rc = name_list(s, cJSON_GetObjectItemCaseSensitive(j, "out"), where, "out", &st->nout,
                      &st->out, diag)) ||
      (rc = d9_op_decode(def, j, s->arena, s->path, where, args, diag)))
    return rc;
  st->kind = def->kind;
  st->op = def->name;
  st->where = where;
  st->def = def;
  st->args = args;
  if (def->nin > 0 && st->nin && st->nin != def->nin)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"in\" names %d values, op '%s' takes %d", s->path,
                        where, st->nin, op, def->nin);
  if (def->nout > 0 && st->nout && st->nout != def->nout)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"out\" names %d values, op '%s' makes %d",
                        s->path, where, st->nout, op, def->nout);
  if (st->nout > D9_STEP_MAX_OUTPUTS)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"out\" names %d values, the limit is %d",
                        s->path, where, st->nout, D9_STEP_MAX_OUTPUTS);
  return 0;
}

/* "optional": names of the rule's inputs, not the first (it drives), that
 * may be absent; not with "over" (a stack needs every instance). */
static int parse_optional(d9_spec *s, const cJSON *v, d9_rule *r, d9_diag *diag) {
  int rc = name_list(s, v, r->where, "optional", &r->noptional, &r->optional, diag);
  for (int k = 0; !rc && k < r->noptional; k++) {
    int i = 1;
    while (i < r->ninputs && strcmp(r->in_names[i], r->optional[k])) i++;
    if (i == r->ninputs)
      return d9_diag_fail(diag, EINVAL, "%s: %s: optional '%s' is not an input after the first "
                          "(the first drives the rule)", s->path, r->where, r->optional[k]);
  }
  if (!rc && r->noptional && r->over)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"optional\" and \"over\" exclude each other",
                        s->path, r->where);
  return rc;
}

static int parse_rule(d9_spec *s, const cJSON *j, int idx, d9_rule *r, d9_diag *diag) {
  static const char *const keys[] = {"name", "inputs", "steps", "output", "required", "tied",
                                     "comment", "over", "unstack", "exclude", "parallel",
                                     "optional"};
  const cJSON *nm = cJSON_GetObjectItemCaseSensitive(j, "name");
  if (nm && !cJSON_IsString(nm))
    return d9_diag_fail(diag, EINVAL, "%s: rules[%d]: \"name\" must be a string", s->path, idx);
  r->name = str_or_null(nm) ? nm->valuestring : d9_arena_printf(s->arena, "rules[%d]", idx);
  r->where = str_or_null(nm) ? d9_arena_printf(s->arena, "rules[%d] (%s)", idx, r->name)
                             : r->name;
  if (!r->name || !r->where) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
  if (!cJSON_IsObject(j))
    return d9_diag_fail(diag, EINVAL, "%s: %s: a rule must be an object", s->path, r->where);
  int rc = check_keys(j, keys, 12, s->path, r->where, diag);
  if (rc) return rc;
  const cJSON *pj = cJSON_GetObjectItemCaseSensitive(j, "parallel");
  if (pj) {
    d9_parallel *p = d9_arena_calloc(s->arena, 1, sizeof *p);
    char *w = d9_arena_printf(s->arena, "%s.parallel", r->where);
    if (!p || !w) return -ENOMEM;
    if ((rc = parse_parallel(s, pj, w, 0, p, diag))) return rc;
    r->par = p;
  }
  if ((rc = name_list(s, cJSON_GetObjectItemCaseSensitive(j, "exclude"), r->where, "exclude",
                      &r->nexclude, &r->exclude, diag)))
    return rc;
  for (int i = 0; i < r->nexclude; i++)
    if ((rc = d9_pattern_check(r->exclude[i], r->where, diag))) {
      d9_diag_prefix(diag, "%s", s->path); /* messages name the spec file */
      return rc;
    }
  static const char *const capkeys[] = {"over", "unstack"};
  for (int k = 0; k < 2; k++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, capkeys[k]);
    if (!v) continue;
    char pat[64];
    if (!cJSON_IsString(v) || strlen(v->valuestring) > 30 ||
        (snprintf(pat, sizeof pat, "{%s}", v->valuestring), d9_pattern_check(pat, "", NULL)) ||
        !d9_pattern_is_literal(v->valuestring))
      return d9_diag_fail(diag, EINVAL, "%s: %s: \"%s\" must name a capture (like \"E\")",
                          s->path, r->where, capkeys[k]);
    *(k ? &r->unstack : &r->over) = v->valuestring;
  }
  if (r->over && r->unstack)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"over\" and \"unstack\" exclude each other",
                        s->path, r->where);
  /* inputs: {"x": "pattern", ...} or a single pattern string (named "x") */
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "inputs");
  if (cJSON_IsString(in)) {
    r->ninputs = 1;
    r->in_names = d9_arena_calloc(s->arena, 1, sizeof(char *));
    r->in_pats = d9_arena_calloc(s->arena, 1, sizeof(char *));
    if (!r->in_names || !r->in_pats) return -ENOMEM;
    r->in_names[0] = "x";
    r->in_pats[0] = in->valuestring;
  } else if (cJSON_IsObject(in) && cJSON_GetArraySize(in) > 0) {
    r->ninputs = cJSON_GetArraySize(in);
    r->in_names = d9_arena_calloc(s->arena, (size_t)r->ninputs, sizeof(char *));
    r->in_pats = d9_arena_calloc(s->arena, (size_t)r->ninputs, sizeof(char *));
    if (!r->in_names || !r->in_pats) return -ENOMEM;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, in) {
      if (!cJSON_IsString(e))
        return d9_diag_fail(diag, EINVAL, "%s: %s: input '%s' must be a pattern string",
                            s->path, r->where, e->string);
      r->in_names[i] = e->string;
      r->in_pats[i++] = e->valuestring;
    }
  } else {
    return d9_diag_fail(diag, EINVAL,
                        "%s: %s: \"inputs\" must be a pattern or a non-empty object of patterns",
                        s->path, r->where);
  }
  for (int i = 0; i < r->ninputs; i++) {
    char *w = d9_arena_printf(s->arena, "%s: %s.inputs.%s", s->path, r->where, r->in_names[i]);
    if (!w || (rc = d9_pattern_check(r->in_pats[i], w, diag))) return w ? rc : -ENOMEM;
  }
  if ((rc = parse_optional(s, cJSON_GetObjectItemCaseSensitive(j, "optional"), r, diag)))
    return rc;
  /* steps */
  const cJSON *steps = cJSON_GetObjectItemCaseSensitive(j, "steps");
  if (steps && !cJSON_IsArray(steps))
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"steps\" must be an array", s->path, r->where);
  r->nsteps = steps ? cJSON_GetArraySize(steps) : 0;
  r->steps = d9_arena_calloc(s->arena, (size_t)r->nsteps + 1, sizeof *r->steps);
  if (!r->steps) return -ENOMEM;
  int si = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, steps) {
    char *w = d9_arena_printf(s->arena, "%s.steps[%d]", r->where, si);
    if (!w) return -ENOMEM;
    if ((rc = parse_step(s, e, w, &r->steps[si++], diag))) return rc;
  }
  /* output: a pattern (the last value) or {"value": "pattern", ...} */
  const cJSON *out = cJSON_GetObjectItemCaseSensitive(j, "output");
  if (cJSON_IsString(out)) {
    r->nout = 1;
    r->out_names = d9_arena_calloc(s->arena, 1, sizeof(char *));
    r->out_pats = d9_arena_calloc(s->arena, 1, sizeof(char *));
    if (!r->out_names || !r->out_pats) return -ENOMEM;
    r->out_names[0] = NULL; /* the last value */
    r->out_pats[0] = out->valuestring;
  } else if (cJSON_IsObject(out) && cJSON_GetArraySize(out) > 0) {
    r->nout = cJSON_GetArraySize(out);
    r->out_names = d9_arena_calloc(s->arena, (size_t)r->nout, sizeof(char *));
    r->out_pats = d9_arena_calloc(s->arena, (size_t)r->nout, sizeof(char *));
    if (!r->out_names || !r->out_pats) return -ENOMEM;
    int i = 0;
    cJSON_ArrayForEach(e, out) {
      if (!cJSON_IsString(e))
        return d9_diag_fail(diag, EINVAL, "%s: %s: output '%s' must be a pattern string",
                            s->path, r->where, e->string);
      r->out_names[i] = e->string;
      r->out_pats[i++] = e->valuestring;
    }
  } else {
    return d9_diag_fail(diag, EINVAL,
                        "%s: %s: \"output\" must be a pattern or a non-empty object of patterns",
                        s->path, r->where);
  }
  for (int i = 0; i < r->nout; i++) {
    char *w = d9_arena_printf(s->arena, "%s: %s.output", s->path, r->where);
    if (!w || (rc = d9_pattern_check(r->out_pats[i], w, diag))) return w ? rc : -ENOMEM;
    if (!strcmp(r->out_pats[i], "__metadata__"))
      return d9_diag_fail(diag, EINVAL, "%s: %s: target name '__metadata__' is reserved",
                          s->path, r->where);
  }
  for (int i = 0; i < r->nout && (r->over || r->unstack); i++) {
    char cap[64];
    snprintf(cap, sizeof cap, "{%s}", r->over ? r->over : r->unstack);
    int uses = strstr(r->out_pats[i], cap) != NULL;
    if (r->over ? uses : !uses)
      return d9_diag_fail(diag, EINVAL, "%s: %s: output '%s' %s the capture %s", s->path,
                          r->where, r->out_pats[i], r->over ? "must not use" : "must use", cap);
  }
  const cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "required");
  if (req && !cJSON_IsBool(req))
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"required\" must be true or false", s->path,
                        r->where);
  r->required = cJSON_IsTrue(req);
  const cJSON *tied = cJSON_GetObjectItemCaseSensitive(j, "tied");
  if (tied) {
    static const char *const tkeys[] = {"from", "if", "shared"};
    if (!cJSON_IsObject(tied) || (rc = check_keys(tied, tkeys, 3, s->path, r->where, diag)))
      return rc ? rc
                : d9_diag_fail(diag, EINVAL, "%s: %s: \"tied\" must be an object", s->path,
                               r->where);
    r->tied_from = str_or_null(cJSON_GetObjectItemCaseSensitive(tied, "from"));
    r->tied_if = str_or_null(cJSON_GetObjectItemCaseSensitive(tied, "if"));
    if (!r->tied_from || !r->tied_if || !d9_pattern_is_literal(r->tied_from) ||
        r->ninputs != 1 || !d9_pattern_is_literal(r->in_pats[0]))
      return d9_diag_fail(diag, EINVAL,
                          "%s: %s: \"tied\" needs \"from\" (a tensor name) and \"if\" (a "
                          "flag), on a rule with one literal input",
                          s->path, r->where);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(tied, "shared");
    if (sh && !cJSON_IsBool(sh))
      return d9_diag_fail(diag, EINVAL, "%s: %s: tied \"shared\" must be true or false", s->path,
                          r->where);
    if (cJSON_IsTrue(sh)) r->drop_if = r->tied_if; /* shared: no target of its own when set */
  }
  return 0;
}

static int parse_size(const cJSON *v, uint64_t *out) {
  if (cJSON_IsNumber(v)) {
    int64_t x;
    if (d9_json_int(v, 1, INT64_C(1) << 53, &x)) return -EINVAL;
    *out = (uint64_t)x;
    return 0;
  }
  if (!cJSON_IsString(v)) return -EINVAL;
  char *end;
  if (v->valuestring[0] < '0' || v->valuestring[0] > '9') return -EINVAL; /* no sign, no space */
  errno = 0;
  unsigned long long n = strtoull(v->valuestring, &end, 10);
  if (errno || end == v->valuestring || n == 0) return -EINVAL;
  static const struct { const char *suf; uint64_t mul; } sufs[] = {
      {"", 1}, {"B", 1}, {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000},
      {"KiB", 1024}, {"MiB", 1 << 20}, {"GiB", 1 << 30}};
  for (size_t i = 0; i < sizeof sufs / sizeof *sufs; i++)
    if (!strcmp(end, sufs[i].suf)) {
      if (n > UINT64_MAX / sufs[i].mul) return -EINVAL;
      *out = n * sufs[i].mul;
      return 0;
    }
  return -EINVAL;
}

static int parse_output(d9_spec *s, const cJSON *o, d9_diag *diag) {
  static const char *const keys[] = {"max_shard_size", "single_file", "copy"};
  s->max_shard_size = 5000000000ull; /* HF's default, "5GB" */
  static const char *const default_copy[] = {
      "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
      "tokenizer.model", "special_tokens_map.json", "vocab.json", "merges.txt",
      "chat_template.jinja", "adapter_config.json"};
  s->copy = (const char **)default_copy;
  s->ncopy = sizeof default_copy / sizeof *default_copy;
  if (!o) return 0;
  int rc;
  if (!cJSON_IsObject(o) || (rc = check_keys(o, keys, 3, s->path, "output", diag)))
    return d9_diag_fail(diag, EINVAL, "%s: output: must be an object", s->path);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "max_shard_size");
  if (v && parse_size(v, &s->max_shard_size))
    return d9_diag_fail(diag, EINVAL,
                        "%s: output.max_shard_size: want bytes or a size like \"5GB\" or "
                        "\"512MiB\"",
                        s->path);
  v = cJSON_GetObjectItemCaseSensitive(o, "single_file");
  if (v && !cJSON_IsBool(v))
    return d9_diag_fail(diag, EINVAL, "%s: output.single_file: must be true or false",
                        s->path);
  s->single_file = cJSON_IsTrue(v);
  v = cJSON_GetObjectItemCaseSensitive(o, "copy");
  if (v) {
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) {
      s->ncopy = 0;
      return 0;
    }
    if ((rc = name_list(s, v, "output", "copy", &s->ncopy, &s->copy, diag))) return rc;
    for (int i = 0; i < s->ncopy; i++)
      if (!s->copy[i][0] || strchr(s->copy[i], '/') || !strcmp(s->copy[i], "..") ||
          !strcmp(s->copy[i], "."))
        return d9_diag_fail(diag, EINVAL,
                            "%s: output.copy[%d]: '%s' must name files in the source "
                            "directory itself (no '/', no '..')",
                            s->path, i, s->copy[i]);
  }
  return 0;
}

static int parse_parallel(d9_spec *s, const cJSON *j, const char *where, int need_pattern,
                          d9_parallel *p, d9_diag *diag) {
  static const char *const keys[] = {"style",    "pattern", "groups", "capture",
                                     "renumber", "tp",      "comment", "heads"};
  static const char *const styles[] = {"replicated", "column", "row", "qkv", "gated", "vocab", "expert"};
  int rc;
  const cJSON *tp = NULL;
  p->expert_tp = D9_PAR_COUNT_SENTINEL;
  if (cJSON_IsString(j)) {
    p->style = D9_PAR_COUNT_SENTINEL;
    for (int i = 0; i < 7; i++)
      if (!strcmp(j->valuestring, styles[i])) p->style = (d9_par_style)i;
  } else if (cJSON_IsObject(j)) {
    if ((rc = check_keys(j, keys, 8, s->path, where, diag))) return rc;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "style");
    p->style = D9_PAR_COUNT_SENTINEL;
    for (int i = 0; cJSON_IsString(st) && i < 7; i++)
      if (!strcmp(st->valuestring, styles[i])) p->style = (d9_par_style)i;
    p->pattern = str_or_null(cJSON_GetObjectItemCaseSensitive(j, "pattern"));
    p->groups = cJSON_GetObjectItemCaseSensitive(j, "groups");
    p->heads = cJSON_GetObjectItemCaseSensitive(j, "heads");
    p->capture = str_or_null(cJSON_GetObjectItemCaseSensitive(j, "capture"));
    p->renumber = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "renumber"));
    tp = cJSON_GetObjectItemCaseSensitive(j, "tp");
    for (int i = 0; cJSON_IsString(tp) && i < 5; i++)
      if (i != D9_PAR_QKV && !strcmp(tp->valuestring, styles[i])) p->expert_tp = (d9_par_style)i;
  } else {
    return d9_diag_fail(diag, EINVAL, "%s: %s: a parallel style is a name or an object", s->path, where);
  }
  p->where = where;
  if (p->style == D9_PAR_COUNT_SENTINEL)
    return d9_diag_fail(diag, EINVAL, "%s: %s: style must be replicated, column, row, qkv, "
                        "gated, vocab or expert", s->path, where);
  if (need_pattern && !p->pattern)
    return d9_diag_fail(diag, EINVAL, "%s: %s: needs a \"pattern\"", s->path, where);
  if (p->pattern && (rc = d9_pattern_check(p->pattern, where, diag))) {
    d9_diag_prefix(diag, "%s", s->path); /* messages name the spec file */
    return rc;
  }
  if (p->style == D9_PAR_QKV && !p->groups)
    return d9_diag_fail(diag, EINVAL, "%s: %s: style qkv needs \"groups\" (the KV group count)",
                        s->path, where);
  if (tp && p->style != D9_PAR_EXPERT)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"tp\" (the TP style inside an expert) goes "
                        "with style expert", s->path, where);
  if (tp && p->expert_tp == D9_PAR_COUNT_SENTINEL)
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"tp\" must be column, row, gated or "
                        "replicated", s->path, where);
  if (p->capture && (p->style != D9_PAR_EXPERT || !p->pattern))
    return d9_diag_fail(diag, EINVAL, "%s: %s: \"capture\" goes with style expert and a pattern",
                        s->path, where);
  return 0;
}

static int parse_parallel_defaults(d9_spec *s, d9_diag *diag) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(s->root, "parallel"), *e;
  if (!a) return 0;
  if (!cJSON_IsArray(a))
    return d9_diag_fail(diag, EINVAL, "%s: \"parallel\" must be a list of {pattern, style}", s->path);
  s->npar = cJSON_GetArraySize(a);
  s->par = d9_arena_calloc(s->arena, (size_t)s->npar + 1, sizeof *s->par);
  if (!s->par) return -ENOMEM;
  int i = 0, rc;
  cJSON_ArrayForEach(e, a) {
    char *w = d9_arena_printf(s->arena, "parallel[%d]", i);
    if (!w) return -ENOMEM;
    if ((rc = parse_parallel(s, e, w, 1, &s->par[i++], diag))) return rc;
  }
  const cJSON *pl = cJSON_GetObjectItemCaseSensitive(s->root, "pipeline");
  if (!pl) return 0;
  static const char *const keys[] = {"layers", "first", "last", "renumber", "comment"};
  if (!cJSON_IsObject(pl) || (rc = check_keys(pl, keys, 5, s->path, "pipeline", diag)))
    return d9_diag_fail(diag, EINVAL, "%s: pipeline: must be an object", s->path);
  d9_pipeline *p = &s->pipeline;
  p->layers = str_or_null(cJSON_GetObjectItemCaseSensitive(pl, "layers"));
  p->renumber = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pl, "renumber"));
  if (!p->layers || d9_pattern_check(p->layers, "pipeline.layers", NULL))
    return d9_diag_fail(diag, EINVAL, "%s: pipeline.layers: want a pattern with one capture "
                        "for the layer index, like \"decoder.layers.{L}.{rest*}\"", s->path);
  const char *b = strchr(p->layers, '{');
  const char *e2 = b ? strpbrk(b, "*}") : NULL;
  if (!b || !e2 || *e2 != '}')
    return d9_diag_fail(diag, EINVAL, "%s: pipeline.layers: the first capture must be the layer "
                        "index ({L})", s->path);
  p->capture = d9_arena_strndup(s->arena, b + 1, (size_t)(e2 - b - 1));
  if ((rc = name_list(s, cJSON_GetObjectItemCaseSensitive(pl, "first"), "pipeline", "first",
                      &p->nfirst, &p->first, diag)) ||
      (rc = name_list(s, cJSON_GetObjectItemCaseSensitive(pl, "last"), "pipeline", "last",
                      &p->nlast, &p->last, diag)))
    return rc;
  return p->capture ? 0 : -ENOMEM;
}

/* "config": {"set": {key: value, ...}, "delete": [key, ...]} - keys are
 * top-level config.json keys. */
static int parse_config_patch(d9_spec *s, d9_diag *diag) {
  static const char *const keys[] = {"set", "delete"};
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(s->root, "config");
  if (!c) return 0;
  int rc;
  if (!cJSON_IsObject(c)) return d9_diag_fail(diag, EINVAL, "%s: config: must be an object", s->path);
  if ((rc = check_keys(c, keys, 2, s->path, "config", diag))) return rc;
  s->config_set = cJSON_GetObjectItemCaseSensitive(c, "set");
  if (s->config_set && !cJSON_IsObject(s->config_set))
    return d9_diag_fail(diag, EINVAL, "%s: config.set: must be an object", s->path);
  const cJSON *del = cJSON_GetObjectItemCaseSensitive(c, "delete");
  if (del && (rc = name_list(s, del, "config", "delete", &s->nconfig_delete, &s->config_delete, diag)))
    return rc;
  return 0;
}

int d9_spec_parse(const char *text, size_t len, const char *path, d9_spec **out,
                  d9_diag *diag) {
  static const char *const keys[] = {"d9dfs_spec", "description", "params", "ignore",
                                     "rules", "passthrough", "strict", "output", "config",
                                     "parallel", "pipeline", "applies_to"};
  d9_spec *s = calloc(1, sizeof *s);
  if (!s || !(s->arena = d9_arena_create())) {
    free(s);
    return d9_diag_fail(diag, ENOMEM, "%s: out of memory", path);
  }
  int rc = -EINVAL;
  s->path = d9_arena_strdup(s->arena, path);
  if ((rc = d9_json_read(text, len, D9_JSON_MAX_DEPTH, 0, path, &s->root, diag)))
    goto fail; /* -EINVAL, or -ENOMEM */
  if (!cJSON_IsObject(s->root)) {
    rc = d9_diag_fail(diag, EINVAL, "%s: the spec must be a json object", path);
    goto fail;
  }
  if ((rc = check_keys(s->root, keys, 12, path, "top level", diag))) goto fail;
  if ((rc = d9_applies_parse(s, diag))) goto fail;
  if ((rc = parse_parallel_defaults(s, diag))) goto fail;
  if ((rc = parse_config_patch(s, diag))) goto fail;
  if ((rc = d9_config_set_raw(s, text, len, diag))) goto fail;
  int64_t ver;
  if (d9_json_int(cJSON_GetObjectItemCaseSensitive(s->root, "d9dfs_spec"), 1, 1, &ver)) {
    rc = d9_diag_fail(diag, EINVAL, "%s: \"d9dfs_spec\": must be 1 (the format version)", path);
    goto fail;
  }
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->root, "params");
  if (v && !cJSON_IsObject(v)) {
    rc = d9_diag_fail(diag, EINVAL, "%s: \"params\" must be an object", path);
    goto fail;
  }
  if ((rc = name_list(s, cJSON_GetObjectItemCaseSensitive(s->root, "ignore"), "top level",
                      "ignore", &s->nignore, &s->ignore, diag)))
    goto fail;
  for (int i = 0; i < s->nignore; i++) {
    char *w = d9_arena_printf(s->arena, "%s: ignore[%d]", path, i);
    if ((rc = d9_pattern_check(s->ignore[i], w ? w : path, diag))) goto fail;
  }
  s->strict = 1;
  static const char *const flags[] = {"passthrough", "strict"};
  for (int f = 0; f < 2; f++) {
    v = cJSON_GetObjectItemCaseSensitive(s->root, flags[f]);
    if (v && !cJSON_IsBool(v)) {
      rc = d9_diag_fail(diag, EINVAL, "%s: \"%s\" must be true or false", path, flags[f]);
      goto fail;
    }
    if (v) *(f ? &s->strict : &s->passthrough) = cJSON_IsTrue(v);
  }
  const cJSON *rules = cJSON_GetObjectItemCaseSensitive(s->root, "rules");
  if (rules && !cJSON_IsArray(rules)) {
    rc = d9_diag_fail(diag, EINVAL, "%s: \"rules\" must be an array", path);
    goto fail;
  }
  s->nrules = rules ? cJSON_GetArraySize(rules) : 0;
  s->rules = d9_arena_calloc(s->arena, (size_t)s->nrules + 1, sizeof *s->rules);
  if (!s->rules) goto fail;
  int i = 0;
  cJSON_ArrayForEach(v, rules) if ((rc = parse_rule(s, v, i, &s->rules[i], diag))) goto fail;
  else i++;
  if ((rc = parse_output(s, cJSON_GetObjectItemCaseSensitive(s->root, "output"), diag)))
    goto fail;
  *out = s;
  return 0;
fail:
  if (rc == -ENOMEM) d9_diag_fail(diag, ENOMEM, "%s: out of memory", path);
  d9_spec_destroy(s);
  return rc ? rc : -EINVAL;
}

void d9_spec_destroy(d9_spec *s) {
  if (!s) return;
  cJSON_Delete(s->root);
  d9_arena_destroy(s->arena);
  free(s);
}

typedef struct lookup_ctx {
  const d9_spec *s;
  const cJSON *config;
} lookup_ctx;

int d9_spec_lookup(const d9_spec *s, const cJSON *config, const char *name, size_t len,
                   int64_t *v, d9_diag *diag) {
  for (int i = 0; i < s->nparams; i++)
    if (strlen(s->params[i].name) == len && !memcmp(s->params[i].name, name, len)) {
      *v = s->params[i].value;
      return 0;
    }
  /* walk config: a.b.0 */
  const cJSON *cur = config;
  const char *p = name, *end = name + len;
  while (cur && p < end) {
    const char *dot = memchr(p, '.', (size_t)(end - p));
    size_t l = dot ? (size_t)(dot - p) : (size_t)(end - p);
    char key[256];
    if (l == 0 || l >= sizeof key) return -ENOENT;
    memcpy(key, p, l);
    key[l] = 0;
    if (cJSON_IsArray(cur)) {
      char *e;
      long ix = strtol(key, &e, 10);
      cur = (*e || ix < 0 || ix > 1000000) ? NULL : cJSON_GetArrayItem(cur, (int)ix);
    } else {
      cur = cJSON_GetObjectItemCaseSensitive(cur, key);
    }
    p += l + 1;
  }
  if (!cur) return -ENOENT;
  if (cJSON_IsBool(cur)) return *v = cJSON_IsTrue(cur), 0;
  if (cJSON_IsNull(cur)) return -ENOENT;
  if (d9_json_int(cur, -(INT64_C(1) << 53), INT64_C(1) << 53, v))
    return d9_diag_fail(diag, EINVAL, "config.json: '%.*s' is not an integer", (int)len, name);
  return 0;
}

static int lookup_cb(void *ctx, const char *name, size_t len, int64_t *v, d9_diag *diag) {
  lookup_ctx *lc = ctx;
  return d9_spec_lookup(lc->s, lc->config, name, len, v, diag);
}

int d9_spec_int(const d9_spec *s, const cJSON *config, const cJSON *v, const char *where,
                int64_t *out, d9_diag *diag) {
  if (cJSON_IsNumber(v)) {
    if (d9_json_int(v, -(INT64_C(1) << 53), INT64_C(1) << 53, out))
      return d9_diag_fail(diag, EINVAL, "%s: %s: not an integer", s->path, where);
    return 0;
  }
  if (!cJSON_IsString(v))
    return d9_diag_fail(diag, EINVAL, "%s: %s: want an integer or an expression string",
                        s->path, where);
  lookup_ctx lc = {s, config};
  char *w = d9_arena_printf(s->arena, "%s: %s", s->path, where);
  return d9_expr_eval(v->valuestring, lookup_cb, &lc, w ? w : where, out, diag);
}

/* params: {"name": 8 | "expr" | {"default": 8 | "expr"}}. A bare value is
 * computed; {"default": ...} takes config.json's value when present. */
int d9_spec_resolve_params(d9_spec *s, const cJSON *config, d9_diag *diag) {
  const cJSON *params = cJSON_GetObjectItemCaseSensitive(s->root, "params"), *e;
  int n = params ? cJSON_GetArraySize(params) : 0;
  s->params = d9_arena_calloc(s->arena, (size_t)n + 1, sizeof *s->params);
  if (!s->params) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
  s->nparams = 0;
  cJSON_ArrayForEach(e, params) {
    char *where = d9_arena_printf(s->arena, "params.%s", e->string);
    if (!where) return -ENOMEM;
    const cJSON *expr = e;
    int64_t v;
    if (cJSON_IsObject(e)) {
      static const char *const keys[] = {"default"};
      int rc = check_keys(e, keys, 1, s->path, where, diag);
      if (rc) return rc;
      expr = cJSON_GetObjectItemCaseSensitive(e, "default");
      if (!expr)
        return d9_diag_fail(diag, EINVAL, "%s: %s: missing \"default\"", s->path, where);
      int lrc = d9_spec_lookup(s, config, e->string, strlen(e->string), &v, diag);
      if (lrc == 0) goto have;
      if (lrc != -ENOENT) return lrc;
    }
    int rc = d9_spec_int(s, config, expr, where, &v, diag);
    if (rc) return rc;
  have:
    s->params[s->nparams].name = e->string;
    s->params[s->nparams++].value = v;
  }
  return 0;
}
