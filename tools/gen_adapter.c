/* gen_adapter.c - PEFT LoRA/DoRA adapters for the dense families
 * (d9_gen_write_adapter, gen.h): adapter_model.safetensors with lora_A,
 * lora_B (and DoRA magnitudes) per target module, adapter_config.json and
 * the base model's config.json. */
#include "gen_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- PEFT adapters (gen.h) ---- */

static const char *const lora_names[] = {
#define D9_X(e, name) name,
    D9_GEN_LORA_TARGET_TABLE(D9_X)
#undef D9_X
};

int d9_gen_lora_targets(const char *list, unsigned *out) {
  unsigned m = 0;
  const char *p = list;
  if (!list || !*list) return -EINVAL;
  for (;;) {
    size_t n = strcspn(p, ",");
    int k = 0;
    while (k < D9_GEN_LORA_TARGET_COUNT &&
           (strlen(lora_names[k]) != n || strncmp(lora_names[k], p, n)))
      k++;
    if (k == D9_GEN_LORA_TARGET_COUNT || (m & (1u << k))) return -EINVAL;
    m |= 1u << k;
    if (!p[n]) break;
    p += n + 1;
  }
  *out = m;
  return 0;
}

/* The adapter's tensors, layer by layer in module order. */
static int build_adapter(const resolved *r, const d9_gen_adapter *a, glist *l, d9_diag *diag) {
  const int64_t qd = r->nh * r->d, kvd = r->ng * r->d;
  const int64_t in[] = {r->H, r->H, r->H, qd, r->H, r->H, r->I};
  const int64_t out[] = {qd, kvd, kvd, r->H, r->I, r->I, r->H};
  for (int64_t i = 0; i < r->L; i++) {
    int first_a[2] = {-1, -1}; /* lora_A of q (attention) and gate (MLP) */
    for (int k = 0; k < D9_GEN_LORA_TARGET_COUNT; k++) {
      if (!(a->targets & (1u << k))) continue;
      const char *mod = k <= D9_GEN_LORA_O_BIT ? "self_attn" : "mlp";
      int rc, mlp = k > D9_GEN_LORA_O_BIT;
      char pre[160];
      snprintf(pre, sizeof pre, "base_model.model.model.layers.%lld.%s.%s_proj", (long long)i,
               mod, lora_names[k]);
      if ((rc = gen_add(l, r->dt, K_WEIGHT, a->rank, in[k], diag, "%s.lora_A.weight", pre)) < 0)
        return rc;
      int shares = k == D9_GEN_LORA_K_BIT || k == D9_GEN_LORA_V_BIT || k == D9_GEN_LORA_UP_BIT;
      if (a->shared_a && shares && first_a[mlp] >= 0) l->v[rc].values_of = first_a[mlp] + 1;
      if ((k == D9_GEN_LORA_Q_BIT || k == D9_GEN_LORA_GATE_BIT) && first_a[mlp] < 0)
        first_a[mlp] = rc;
      if ((rc = gen_add(l, r->dt, K_WEIGHT, out[k], a->rank, diag, "%s.lora_B.weight", pre)) < 0 ||
          (a->dora &&
           (rc = gen_add(l, r->dt, K_NORM, out[k], -1, diag, "%s.lora_magnitude_vector", pre)) < 0))
        return rc;
    }
  }
  return 0;
}

static int write_adapter_config(const char *dir, const d9_gen_adapter *a, d9_diag *diag) {
  sbuf b = {0};
  gen_sb_printf(&b, "{\n  \"base_model_name_or_path\": \"d9gen\",\n  \"bias\": \"none\",\n"
            "  \"lora_alpha\": %lld,\n  \"lora_dropout\": 0.0,\n  \"peft_type\": \"LORA\",\n"
            "  \"r\": %lld,\n  \"target_modules\": [", (long long)(2 * a->rank),
            (long long)a->rank);
  for (int k = 0, n = 0; k < D9_GEN_LORA_TARGET_COUNT; k++)
    if (a->targets & (1u << k)) gen_sb_printf(&b, "%s\"%s_proj\"", n++ ? ", " : "", lora_names[k]);
  gen_sb_printf(&b, "],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": %s\n}\n",
            a->dora ? "true" : "false");
  int rc = b.oom ? d9_diag_fail(diag, ENOMEM, "out of memory for adapter_config.json")
                 : gen_write_small(dir, "adapter_config.json", b.s, diag);
  free(b.s);
  return rc;
}

int d9_gen_write_adapter(const char *dir, const d9_gen_params *p, const d9_gen_adapter *a,
                         d9_diag *diag) {
  resolved r;
  glist l = {0};
  unsigned char *buf = NULL;
  int rc;
  if (!dir || !a) return d9_diag_fail(diag, EINVAL, "no output directory or adapter");
  if ((rc = gen_resolve(p, &r, diag))) return rc;
  if (gen_is_moe(r.fam) || r.fam == D9_GEN_DEEPSEEK_FP8)
    return d9_diag_fail(diag, EINVAL, "adapters are generated for dense families (llama, "
                        "qwen2, gemma), not %s", d9_gen_family_name(r.fam));
  if ((rc = gen_check_dim("lora rank", a->rank, 1, diag))) return rc;
  if (!a->targets || a->targets > D9_GEN_LORA_ALL)
    return d9_diag_fail(diag, EINVAL, "no lora target modules");
  if ((rc = build_adapter(&r, a, &l, diag))) goto out;
  if ((rc = gen_make_dirs(dir, diag))) goto out;
  if (!(buf = malloc(GEN_CHUNK))) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
    goto out;
  }
  if ((rc = gen_write_file(dir, "adapter_model.safetensors", &l, 0, l.n, &r, buf, diag)) ||
      (rc = write_adapter_config(dir, a, diag)) || (rc = gen_write_config(dir, &r, p, diag)))
    goto out;
out:
  free(buf);
  gen_list_free(&l);
  return rc;
}
