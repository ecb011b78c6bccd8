#include "fs/fuse_init.h"

#include <string.h>

static uint32_t get32(const void *p, size_t at) {
  uint32_t v;
  memcpy(&v, (const unsigned char *)p + at, 4);
  return v;
}

static void put32(void *p, size_t at, uint32_t v) {
  memcpy((unsigned char *)p + at, &v, 4);
}

int d9_fuse_init_request(const void *msg, size_t len, uint64_t *unique, uint64_t *flags) {
  if (!msg || len < D9_FUSE_IN_HDR + D9_INIT_IN_FLAGS2 + 4) return 0;
  if (get32(msg, 4) != D9_FUSE_OP_INIT) return 0;
  uint64_t f = get32(msg, D9_FUSE_IN_HDR + D9_INIT_IN_FLAGS);
  if (f & D9_FUSE_INIT_EXT) f |= (uint64_t)get32(msg, D9_FUSE_IN_HDR + D9_INIT_IN_FLAGS2) << 32;
  memcpy(unique, (const unsigned char *)msg + 8, 8);
  *flags = f;
  return 1;
}

long d9_fuse_init_reply(const void *hdr, size_t hlen, const void *arg, size_t alen,
                        uint64_t unique, uint64_t add, unsigned char *out) {
  if (!hdr || hlen < D9_FUSE_OUT_HDR) return 0;
  uint64_t u;
  memcpy(&u, (const unsigned char *)hdr + 8, 8);
  if (u != unique || get32(hdr, 4) != 0) return 0; /* another reply, or an error */
  if (!arg || alen < D9_INIT_OUT_FLAGS2 + 4 || alen > D9_INIT_OUT_MAX) return -1;
  memcpy(out, arg, alen);
  if (add >> 32) add |= D9_FUSE_INIT_EXT;
  put32(out, D9_INIT_OUT_FLAGS, get32(out, D9_INIT_OUT_FLAGS) | (uint32_t)add);
  put32(out, D9_INIT_OUT_FLAGS2, get32(out, D9_INIT_OUT_FLAGS2) | (uint32_t)(add >> 32));
  return (long)alen;
}
