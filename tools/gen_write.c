/* gen_write.c - the generator's files (gen_impl.h): tensor values from a
 * seeded stream per tensor name, each safetensors shard, the index,
 * config.json and the small JSON files, each written under a temporary
 * name and renamed into place; d9_gen_write. */
#include "gen_impl.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/kernels.h"
#include "../mapper/st_header.h"

/* ---- values ---- */

static uint64_t fnv1a(const char *s) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (; *s; s++) h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
  return h;
}

/* splitmix64: advance *s and return the next output. */
static uint64_t next64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* The next value for kind k, as f32. u is exact: 24 bits. */
static float next_value(uint64_t *s, val_kind k, int zero_norm) {
  uint32_t top = (uint32_t)(next64(s) >> 40);                   /* [0, 2^24) */
  float u = (float)((int32_t)top - (1 << 23)) * (1.0f / (1 << 23)); /* [-1,1) */
  switch (k) {
  case K_NORM: return zero_norm ? u * 0.1f : 1.0f + u * 0.1f;
  case K_FP8: return u * 448.0f;
  case K_SCALE: return 1e-3f + (float)top * (1.0f / (1 << 24)) * 0.099f;
  case K_MXFP4: return (float)(top >> 16);     /* a byte: two random E2M1 codes */
  case K_E8M0: return (float)(118 + top % 16); /* 2^-9 .. 2^6 */
  default: return u;
  }
}

static void put_le(unsigned char *p, uint32_t v, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Fill n elements of tensor t into buf, continuing the stream in *s. */
static void fill(unsigned char *buf, int64_t n, const gtensor *t, uint64_t *s,
                 int zero_norm) {
  size_t es = d9_dtype_size(t->dtype);
  for (int64_t i = 0; i < n; i++) {
    float f = next_value(s, t->kind, zero_norm);
    unsigned char *o = buf + (size_t)i * es;
    switch (t->dtype) {
    case D9_F32: {
      uint32_t bits;
      memcpy(&bits, &f, 4);
      put_le(o, bits, 4);
      break;
    }
    case D9_F16: put_le(o, d9_f32_to_f16(f), 2); break;
    case D9_BF16: put_le(o, d9_f32_to_bf16(f), 2); break;
    case D9_U8: o[0] = (unsigned char)f; break; /* K_MXFP4, K_E8M0: exact bytes */
    default: o[0] = d9_f32_to_e4m3(f); break; /* D9_F8_E4M3 */
    }
  }
}

/* ---- files ---- */

static const char *reason(int err, char *buf, size_t n) {
  snprintf(buf, n, "%s", strerror(err));
  buf[0] = (char)tolower((unsigned char)buf[0]);
  return buf;
}

static char *join(const char *dir, const char *name, d9_diag *diag) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) {
    d9_diag_fail(diag, ENOMEM, "out of memory");
    return NULL;
  }
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

static int write_all(int fd, const void *data, size_t len) {
  const unsigned char *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int gen_make_dirs(const char *dir, d9_diag *diag) {
  char why[128];
  if (!*dir) return d9_diag_fail(diag, EINVAL, "empty output directory name");
  char *p = strdup(dir);
  if (!p) return d9_diag_fail(diag, ENOMEM, "out of memory");
  int rc = 0;
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != 0) continue;
    char c = *s;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      rc = d9_diag_fail(diag, errno, "%s: cannot create directory: %s", p,
                        reason(errno, why, sizeof why));
      break;
    }
    *s = c;
    if (!c) break;
  }
  free(p);
  struct stat st;
  if (rc == 0 && stat(dir, &st) != 0)
    rc = d9_diag_fail(diag, errno, "%s: %s", dir, reason(errno, why, sizeof why));
  if (rc == 0 && !S_ISDIR(st.st_mode))
    rc = d9_diag_fail(diag, ENOTDIR, "%s: not a directory", dir);
  return rc;
}

/* An open temporary file that becomes dir/name on commit. */
typedef struct outfile {
  char *path, *tmp;
  int fd;
} outfile;

static int out_open(outfile *o, const char *dir, const char *name, d9_diag *diag) {
  char why[128], tname[64];
  o->fd = -1;
  o->tmp = NULL;
  if (!(o->path = join(dir, name, diag))) return -ENOMEM;
  snprintf(tname, sizeof tname, ".%.32s.%ld.tmp", name, (long)getpid());
  if (!(o->tmp = join(dir, tname, diag))) {
    free(o->path);
    return -ENOMEM;
  }
  o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (o->fd < 0) {
    int rc = d9_diag_fail(diag, errno, "%s: cannot create: %s", o->tmp,
                          reason(errno, why, sizeof why));
    free(o->tmp);
    free(o->path);
    return rc;
  }
  return 0;
}

static int out_write(outfile *o, const void *data, size_t len, d9_diag *diag) {
  char why[128];
  int rc = write_all(o->fd, data, len);
  if (rc) d9_diag_fail(diag, -rc, "%s: write failed: %s", o->tmp,
                       reason(-rc, why, sizeof why));
  return rc;
}

/* Close and, if ok, rename into place; otherwise remove the temporary. */
static int out_close(outfile *o, int ok, d9_diag *diag) {
  char why[128];
  int rc = 0;
  if (close(o->fd) != 0 && ok)
    rc = d9_diag_fail(diag, errno, "%s: close failed: %s", o->tmp,
                      reason(errno, why, sizeof why));
  if (ok && rc == 0 && rename(o->tmp, o->path) != 0)
    rc = d9_diag_fail(diag, errno, "%s: cannot rename into place: %s", o->path,
                      reason(errno, why, sizeof why));
  if (!ok || rc) unlink(o->tmp);
  free(o->tmp);
  free(o->path);
  return rc;
}

int gen_write_small(const char *dir, const char *name, const char *text,
                       d9_diag *diag) {
  outfile o;
  int rc = out_open(&o, dir, name, diag);
  if (rc) return rc;
  rc = out_write(&o, text, strlen(text), diag);
  int rc2 = out_close(&o, rc == 0, diag);
  return rc ? rc : rc2;
}

__attribute__((format(printf, 2, 3)))
void gen_sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if (b->len + (size_t)n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->oom = 1;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

static void shard_name(char *out, size_t n, int k, int ns) {
  if (ns == 1)
    snprintf(out, n, "model.safetensors");
  else
    snprintf(out, n, "model-%05d-of-%05d.safetensors", k + 1, ns);
}

/* Write file fname: tensors [from, to) of the list. */
int gen_write_file(const char *dir, const char *fname, const glist *l, int from, int to,
                      const resolved *r, unsigned char *buf, d9_diag *diag) {
  int n = to - from, rc;
  d9_st_tensor *tt = calloc((size_t)n, sizeof *tt);
  if (!tt) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", fname);
  for (int i = 0; i < n; i++) {
    const gtensor *g = &l->v[from + i];
    tt[i].name = g->name;
    tt[i].dtype = g->dtype;
    tt[i].ndim = g->ndim;
    for (int d = 0; d < g->ndim; d++) tt[i].shape[d] = g->shape[d];
  }
  unsigned char *hdr = NULL;
  uint64_t hlen = 0;
  rc = d9_st_write_header(tt, n, NULL, NULL, 0, &hdr, &hlen);
  if (rc) {
    d9_diag_fail(diag, -rc, "%s: cannot build the safetensors header", fname);
    goto out_tensors;
  }
  outfile o;
  if ((rc = out_open(&o, dir, fname, diag))) goto out_header;
  rc = out_write(&o, hdr, (size_t)hlen, diag);
  const int zero_norm = r->fam == D9_GEN_GEMMA;
  for (int i = 0; rc == 0 && i < n; i++) {
    const gtensor *g = &l->v[from + i];
    size_t es = d9_dtype_size(g->dtype);
    int64_t left = (int64_t)(g->nbytes / es), per = (int64_t)(GEN_CHUNK / es);
    uint64_t s = r->seed ^ fnv1a(g->values_of ? l->v[g->values_of - 1].name : g->name);
    while (rc == 0 && left > 0) {
      int64_t m = left < per ? left : per;
      fill(buf, m, g, &s, zero_norm);
      rc = out_write(&o, buf, (size_t)m * es, diag);
      left -= m;
    }
  }
  int rc2 = out_close(&o, rc == 0, diag);
  if (rc == 0) rc = rc2;
out_header:
  free(hdr);
out_tensors:
  free(tt);
  return rc;
}

/* Write shard k: tensors [from, to) of the list. */
static int write_shard(const char *dir, const glist *l, int from, int to,
                       const resolved *r, int k, unsigned char *buf,
                       d9_diag *diag) {
  char fname[64];
  shard_name(fname, sizeof fname, k, r->shards);
  return gen_write_file(dir, fname, l, from, to, r, buf, diag);
}

static int write_index(const char *dir, const glist *l, const resolved *r,
                       uint64_t total, d9_diag *diag) {
  sbuf b = {0};
  char fname[64];
  gen_sb_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n"
            "  \"weight_map\": {\n", (unsigned long long)total);
  for (int i = 0; i < l->n; i++) {
    shard_name(fname, sizeof fname, l->v[i].shard, r->shards);
    gen_sb_printf(&b, "    \"%s\": \"%s\"%s\n", l->v[i].name, fname,
              i + 1 < l->n ? "," : "");
  }
  gen_sb_printf(&b, "  }\n}\n");
  int rc = b.oom ? d9_diag_fail(diag, ENOMEM, "out of memory for the index")
                 : gen_write_small(dir, "model.safetensors.index.json", b.s, diag);
  free(b.s);
  return rc;
}

int gen_write_config(const char *dir, const resolved *r,
                        const d9_gen_params *p, d9_diag *diag) {
  static const char *const arch[] = {
      "LlamaForCausalLM", "Qwen2ForCausalLM", "MixtralForCausalLM",
      "Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM", "GemmaForCausalLM",
      "GptOssForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM", "DeepseekV3ForCausalLM"};
  static const char *const mtype[] = {"llama", "qwen2", "mixtral", "qwen3_moe", "deepseek_v3",
                                      "gemma", "gpt_oss", "qwen3", "phi3", "deepseek_v3"};
  const char *tdt = r->dt == D9_F32 ? "float32"
                    : r->dt == D9_F16 ? "float16" : "bfloat16";
  sbuf b = {0};
  gen_sb_printf(&b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n",
            arch[r->fam], mtype[r->fam]);
  gen_sb_printf(&b, "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n"
            "  \"num_attention_heads\": %lld,\n  \"num_key_value_heads\": %lld,\n"
            "  \"num_hidden_layers\": %lld,\n  \"vocab_size\": %lld,\n",
            (long long)r->H, (long long)r->I, (long long)r->nh,
            (long long)r->ng, (long long)r->L, (long long)r->V);
  if ((p->head_dim != 0 || r->fam == D9_GEN_GEMMA) && r->fam != D9_GEN_DEEPSEEK_V3)
    gen_sb_printf(&b, "  \"head_dim\": %lld,\n", (long long)r->d);
  gen_sb_printf(&b, "  \"rms_norm_eps\": 1e-05,\n  \"tie_word_embeddings\": %s,\n"
            "  \"attention_bias\": %s,\n  \"hidden_act\": \"%s\",\n"
            "  \"max_position_embeddings\": 4096,\n  \"bos_token_id\": 1,\n"
            "  \"eos_token_id\": 2,\n",
            r->tied ? "true" : "false", r->bias ? "true" : "false",
            r->fam == D9_GEN_GEMMA ? "gelu_pytorch_tanh" : "silu");
  if (r->fam == D9_GEN_MIXTRAL)
    gen_sb_printf(&b, "  \"num_local_experts\": %lld,\n  \"num_experts_per_tok\": 2,\n",
              (long long)r->E);
  if (r->fam == D9_GEN_QWEN3_MOE)
    gen_sb_printf(&b, "  \"num_experts\": %lld,\n  \"moe_intermediate_size\": %lld,\n"
              "  \"num_experts_per_tok\": 2,\n", (long long)r->E, (long long)r->I);
  if (r->fam == D9_GEN_DEEPSEEK_V3) {
    const mla_dims m = gen_mla_of(r);
    gen_sb_printf(&b, "  \"q_lora_rank\": %lld,\n  \"kv_lora_rank\": %lld,\n"
              "  \"qk_nope_head_dim\": %lld,\n  \"qk_rope_head_dim\": %lld,\n"
              "  \"v_head_dim\": %lld,\n  \"n_routed_experts\": %lld,\n"
              "  \"n_shared_experts\": 1,\n  \"moe_intermediate_size\": %lld,\n"
              "  \"first_k_dense_replace\": 1,\n  \"num_experts_per_tok\": 2,\n"
              "  \"n_group\": 1,\n  \"topk_group\": 1,\n",
              (long long)m.q_lora, (long long)m.kv_lora, (long long)m.nope,
              (long long)m.rope, (long long)m.v, (long long)r->E, (long long)m.moe_i);
  }
  if (gen_is_fp8(r->fam))
    gen_sb_printf(&b, "  \"quantization_config\": {\"quant_method\": \"fp8\", "
              "\"fmt\": \"e4m3\", \"activation_scheme\": \"dynamic\", "
              "\"weight_block_size\": [%lld, %lld]},\n",
              (long long)r->b, (long long)r->b);
  if (r->fam == D9_GEN_GPT_OSS)
    gen_sb_printf(&b, "  \"num_local_experts\": %lld,\n  \"num_experts_per_tok\": 2,\n"
              "  \"quantization_config\": {\"quant_method\": \"mxfp4\", "
              "\"modules_to_not_convert\": [\"model.layers.*.self_attn\", "
              "\"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"]},\n",
              (long long)r->E);
  gen_sb_printf(&b, "  \"torch_dtype\": \"%s\"\n}\n", tdt);
  int rc = b.oom ? d9_diag_fail(diag, ENOMEM, "out of memory for config.json")
                 : gen_write_small(dir, "config.json", b.s, diag);
  free(b.s);
  return rc;
}

static const char tokenizer_config[] =
    "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
    "  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
    "  \"model_max_length\": 4096\n}\n";
static const char generation_config[] =
    "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n  \"transformers_version\": \"4.44.0\"\n}\n";

int d9_gen_write(const char *dir, const d9_gen_params *p, d9_diag *diag) {
  resolved r;
  glist l = {0};
  unsigned char *buf = NULL;
  uint64_t total;
  int rc;
  if (!dir) return d9_diag_fail(diag, EINVAL, "no output directory");
  if ((rc = gen_prepare(p, &r, &l, &total, diag))) return rc;
  if ((rc = gen_make_dirs(dir, diag))) goto out_list;
  if (!(buf = malloc(GEN_CHUNK))) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
    goto out_list;
  }
  for (int k = 0, from = 0; k < r.shards; k++) {
    int to = from;
    while (to < l.n && l.v[to].shard == k) to++;
    if ((rc = write_shard(dir, &l, from, to, &r, k, buf, diag))) goto out_buf;
    from = to;
  }
  if (r.shards > 1 && (rc = write_index(dir, &l, &r, total, diag)))
    goto out_buf;
  if ((rc = gen_write_config(dir, &r, p, diag)) ||
      (rc = gen_write_small(dir, "tokenizer_config.json", tokenizer_config, diag)) ||
      (rc = gen_write_small(dir, "generation_config.json", generation_config, diag)))
    goto out_buf;
out_buf:
  free(buf);
out_list:
  gen_list_free(&l);
  return rc;
}
