/* rank.h - per-rank views: the slice of every target tensor that one
 * tensor-, expert- and pipeline-parallel rank loads, under the full view's
 * tensor names (docs/design.md "TP styles", "Experts").
 *
 * TP rank t of T: replicated (whole), column (dim 0 chunk t), row (dim 1
 * chunk t), qkv (dim 0 chunk t of the interleaved tensor; the KV groups
 * must be a multiple of T - whole groups per rank - or a divisor of T -
 * T / groups ranks share each group's rows, Megatron-Core's layout), gated ([G_t; U_t] with G, U the halves of dim
 * 0), vocab (rows zero-padded to a multiple of vocab_divisible_by * T, then
 * column). Uneven splits are errors naming the tensor, the style and the
 * sizes. EP rank e of P owns experts [start, start+count) by the remainder
 * rule (the first E % P ranks take one more): a stacked [E, ...] tensor is
 * cut on dim 0; a per-expert tensor (style with a capture) belongs to its
 * owner only, renumbered from 0 when the style asks. With expert tensor
 * parallelism (etp = tp > 1) each of the rank's experts is further split by
 * the style's "tp" (column, row, gated or replicated) for TP rank t, on the
 * expert's own dims (a stacked [E, ...] tensor's dims shift by one); with
 * etp = 1 expert tensors are whole. PP stage s of S holds its share
 * of the layers (the remainder rule, or an explicit split), the "first"
 * tensors on stage 0, the "last" ones on stage S-1, anything else on every
 * stage; layers are renumbered from 0 per stage when the spec asks. A
 * "shared" tied rule whose flag is set has no target in the full view
 * (Megatron-Core's shared embedding), but with pp > 1 its last stage holds
 * the tied source under the rule's output name, split by its style, as
 * Megatron keeps a copy of the embedding there.
 */
#ifndef D9_RANK_H
#define D9_RANK_H

#include "graph.h"
#include "spec.h"

typedef struct d9_rank_opts {
  int tp, ep, pp;          /* sizes, >= 1 */
  int etp;                 /* expert tensor parallel size: 1, or tp */
  int vocab_divisible_by;  /* >= 1 */
  int npp_layers;          /* explicit layers per stage (0 = remainder rule) */
  const int *pp_layers;
} d9_rank_opts;

/* First index and count of the share of `total` items that rank r of n
 * owns by the remainder rule. */
void d9_rank_share(int64_t total, int r, int n, int64_t *start, int64_t *count);

/* What every rank needs to know of each target, matched once per graph
 * rather than once per rank (a DeepSeek-V3 graph has ~90,000 targets and a
 * tp=8,ep=8,pp=8 mount 512 ranks): its parallel style, its pipeline layer,
 * whether it is a first/last-stage tensor, its expert index; and the
 * expert count of each expert style. Arena-owned. */
typedef struct d9_rank_prep d9_rank_prep;
int d9_rank_prepare(const d9_spec *s, const d9_graph *g, d9_arena *a, d9_rank_prep **out,
                    d9_diag *diag);

/* The targets of rank (t, e, p): nodes and names from a, sorted by name.
 * prep: from d9_rank_prepare for s and g, or NULL (then prepared here, into
 * a). Returns 0 or -errno with diag naming the tensor, the style and the
 * sizes. */
int d9_rank_targets(const d9_spec *s, const d9_catalog *c, const d9_graph *g,
                    const d9_rank_opts *o, int t, int e, int p, d9_arena *a,
                    d9_target **out, int *nout, d9_diag *diag);
int d9_rank_targets_prepared(const d9_spec *s, const d9_catalog *c, const d9_graph *g,
                             const d9_rank_prep *prep, const d9_rank_opts *o, int t, int e,
                             int p, d9_arena *a, d9_target **out, int *nout, d9_diag *diag);

/* "tp0", "tp1-ep2", "tp0-pp1", "tp0-ep1-pp1" into buf. */
const char *d9_rank_name(const d9_rank_opts *o, int t, int e, int p, char *buf, size_t cap);

#endif
