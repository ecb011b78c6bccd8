/* d9gen.c - command-line front end of the synthetic checkpoint generator.
 *
 *   d9gen [options] OUTDIR
 *
 * Writes a seeded synthetic HF checkpoint into OUTDIR (see tools/gen.h) and
 * prints one summary line. Exit 0 on success, 1 on any error, usage errors
 * included (one message on stderr prefixed "d9gen: ").
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"

static const char usage[] =
    "usage: d9gen [options] OUTDIR\n"
    "Write a seeded synthetic HuggingFace-style checkpoint into OUTDIR.\n"
    "\n"
    "  --family F         llama (default), qwen2, mixtral, qwen3_moe,\n"
    "                     deepseek_fp8, gemma, gpt_oss, qwen3, phi3, deepseek_v3\n"
    "  --layers N         decoder layers (2)\n"
    "  --hidden N         hidden size (64)\n"
    "  --heads N          attention heads (4)\n"
    "  --kv-heads N       key/value heads; must divide heads (2)\n"
    "  --head-dim N       head dimension; 0 = hidden/heads (gemma: 32)\n"
    "  --intermediate N   MLP (per-expert) intermediate size (128)\n"
    "  --vocab N          vocabulary size (256)\n"
    "  --experts N        experts, MoE families (4)\n"
    "  --dtype T          BF16 (default), F16 or F32\n"
    "  --bias 0|1         q/k/v biases (default: family; qwen2, gpt_oss on)\n"
    "  --tied 0|1         tie lm_head to the embedding (default: family)\n"
    "  --shards N         safetensors files (1)\n"
    "  --block N          FP8 block size, deepseek_fp8 and deepseek_v3 (128)\n"
    "  --seed N           seed of the values (1)\n"
    "  --adapter lora|dora  write a PEFT adapter for that model instead\n"
    "                     (adapter_model.safetensors, adapter_config.json,\n"
    "                     the base config.json; dense families)\n"
    "  --lora-rank N      adapter rank r (8)\n"
    "  --lora-targets L   target modules, of q,k,v,o,gate,up,down (all)\n"
    "  --lora-shared-a 0|1  k, v repeat q's lora_A and up gate's, as NeMo\n"
    "                     AutoModel writes them (1)\n"
    "  --help             show this help\n"
    "  --version          show the version\n";

/* Parse all of s as a decimal integer in [lo, hi]. Returns 0 or -1. */
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  if (!isdigit((unsigned char)*s) && !(*s == '-' && isdigit((unsigned char)s[1])))
    return -1; /* no leading blanks or '+' */
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != 0 || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* The seed takes the whole unsigned 64-bit range. */
static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!isdigit((unsigned char)*s)) return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != 0) return -1;
  *out = v;
  return 0;
}

static int bad_value(const char *opt, const char *val) {
  fprintf(stderr, "d9gen: %s: invalid value '%s'\n", opt, val);
  return 1;
}

/* An integer option out of its range: say the range. */
static int bad_range(const char *opt, const char *val, long long lo, long long hi) {
  fprintf(stderr, "d9gen: %s %s: must be %lld..%lld\n", opt, val, lo, hi);
  return 1;
}

int main(int argc, char **argv) {
  d9_gen_params p;
  const char *family = "llama", *outdir = NULL;
  /* The family sets the defaults, so find it first. */
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--family") == 0) family = argv[i + 1];
  if (d9_gen_family_parse(family) < 0) {
    fprintf(stderr, "d9gen: --family: unknown family '%s'\n", family);
    return 1;
  }
  d9_gen_defaults(&p, family);
  d9_gen_adapter ad = {.rank = 8, .targets = D9_GEN_LORA_ALL, .shared_a = 1};
  int adapter = 0;

  static const struct {
    const char *opt;
    size_t off;
    long long lo, hi;
  } ints[] = {
      {"--layers", offsetof(d9_gen_params, layers), 1, INT32_MAX},
      {"--hidden", offsetof(d9_gen_params, hidden), 1, INT32_MAX},
      {"--heads", offsetof(d9_gen_params, heads), 1, INT32_MAX},
      {"--kv-heads", offsetof(d9_gen_params, kv_heads), 1, INT32_MAX},
      {"--head-dim", offsetof(d9_gen_params, head_dim), 0, INT32_MAX},
      {"--intermediate", offsetof(d9_gen_params, intermediate), 1, INT32_MAX},
      {"--vocab", offsetof(d9_gen_params, vocab), 1, INT32_MAX},
      {"--experts", offsetof(d9_gen_params, experts), 1, INT32_MAX},
      {"--block", offsetof(d9_gen_params, block), 1, INT32_MAX},
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      printf("d9gen %s\n", D9DFS_VERSION);
      return 0;
    }
    if (a[0] != '-' || a[1] == 0) {
      if (outdir) {
        fprintf(stderr, "d9gen: more than one OUTDIR (see --help)\n");
        return 1;
      }
      outdir = a;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "d9gen: %s: missing value or unknown option (see --help)\n",
              a);
      return 1;
    }
    const char *v = argv[++i];
    long long n;
    size_t k;
    for (k = 0; k < sizeof ints / sizeof ints[0]; k++)
      if (strcmp(a, ints[k].opt) == 0) break;
    if (k < sizeof ints / sizeof ints[0]) {
      if (parse_int(v, ints[k].lo, ints[k].hi, &n))
        return bad_range(a, v, ints[k].lo, ints[k].hi);
      *(int64_t *)((char *)&p + ints[k].off) = n;
    } else if (strcmp(a, "--family") == 0) {
      /* handled above */
    } else if (strcmp(a, "--dtype") == 0) {
      d9_dtype t = d9_dtype_parse(v, strlen(v));
      if (t != D9_BF16 && t != D9_F16 && t != D9_F32) return bad_value(a, v);
      p.dtype = t;
    } else if (strcmp(a, "--bias") == 0) {
      if (parse_int(v, 0, 1, &n)) return bad_range(a, v, 0, 1);
      p.bias = (int)n;
    } else if (strcmp(a, "--tied") == 0) {
      if (parse_int(v, 0, 1, &n)) return bad_range(a, v, 0, 1);
      p.tied = (int)n;
    } else if (strcmp(a, "--shards") == 0) {
      if (parse_int(v, 1, 99999, &n)) return bad_range(a, v, 1, 99999);
      p.shards = (int)n;
    } else if (strcmp(a, "--adapter") == 0) {
      if (strcmp(v, "lora") && strcmp(v, "dora")) return bad_value(a, v);
      adapter = 1;
      ad.dora = v[0] == 'd';
    } else if (strcmp(a, "--lora-rank") == 0) {
      if (parse_int(v, 1, INT32_MAX, &n)) return bad_range(a, v, 1, INT32_MAX);
      ad.rank = n;
    } else if (strcmp(a, "--lora-targets") == 0) {
      if (d9_gen_lora_targets(v, &ad.targets)) return bad_value(a, v);
    } else if (strcmp(a, "--lora-shared-a") == 0) {
      if (parse_int(v, 0, 1, &n)) return bad_range(a, v, 0, 1);
      ad.shared_a = (int)n;
    } else if (strcmp(a, "--seed") == 0) {
      if (parse_u64(v, &p.seed)) return bad_value(a, v);
    } else {
      fprintf(stderr, "d9gen: unknown option %s (see --help)\n", a);
      return 1;
    }
  }
  if (!outdir) {
    fprintf(stderr, "d9gen: missing OUTDIR (see --help)\n");
    return 1;
  }

  d9_diag diag = {0};
  if (adapter) {
    if (d9_gen_write_adapter(outdir, &p, &ad, &diag) != 0) {
      fprintf(stderr, "d9gen: %s\n", diag.msg);
      return 1;
    }
    printf("%s: %s adapter for %s, rank %lld\n", outdir, ad.dora ? "DoRA" : "LoRA",
           d9_gen_family_name(p.family), (long long)ad.rank);
    return 0;
  }
  int ntensors = 0;
  uint64_t bytes = 0;
  if (d9_gen_count(&p, &ntensors, &bytes, &diag) != 0 ||
      d9_gen_write(outdir, &p, &diag) != 0) {
    fprintf(stderr, "d9gen: %s\n", diag.msg);
    return 1;
  }
  printf("%s: %s, %d tensors, %" PRIu64 " bytes of tensor data in %d file%s\n",
         outdir, d9_gen_family_name(p.family), ntensors, bytes, p.shards,
         p.shards == 1 ? "" : "s");
  return 0;
}
