/* fuse_init.h - the bytes of the FUSE protocol's INIT exchange that the
 * front end reads and extends: libfuse 3.14 cannot ask for INIT flags past
 * bit 31 (flags2), such as FUSE_DIRECT_IO_ALLOW_MMAP, so fs/fuse_ll.c notes
 * the kernel's offer in the request and adds the flag to libfuse's reply.
 * Plain bytes, no FUSE types; the layout is the kernel's ABI
 * (linux/fuse.h, protocol 7.36 and later). */
#ifndef D9_FUSE_INIT_H
#define D9_FUSE_INIT_H

#include <stddef.h>
#include <stdint.h>

enum {
  D9_FUSE_OP_INIT = 26,
  D9_FUSE_IN_HDR = 40,   /* bytes: struct fuse_in_header */
  D9_FUSE_OUT_HDR = 16,  /* bytes: struct fuse_out_header */
  D9_INIT_IN_FLAGS = 12, /* offsets of flags, flags2 in fuse_init_in */
  D9_INIT_IN_FLAGS2 = 16,
  D9_INIT_OUT_FLAGS = 12, /* ... and in fuse_init_out */
  D9_INIT_OUT_FLAGS2 = 32,
  D9_INIT_OUT_MAX = 256,  /* bytes: the largest fuse_init_out we extend */
};
#define D9_FUSE_INIT_EXT (1ull << 30)
#define D9_FUSE_DIRECT_IO_ALLOW_MMAP (1ull << 36)

/* If msg (len bytes, one request as read from /dev/fuse) is an INIT
 * request: 1, with its unique id and the flags the kernel offers (flags,
 * plus flags2 << 32 when it sets FUSE_INIT_EXT). Otherwise 0. */
int d9_fuse_init_request(const void *msg, size_t len, uint64_t *unique, uint64_t *flags);

/* If hdr (hlen bytes) is the fuse_out_header of a successful reply to
 * request `unique` and arg (alen bytes) its fuse_init_out: copy arg into
 * out (D9_INIT_OUT_MAX bytes) with the 64-bit INIT flags `add` set (and
 * FUSE_INIT_EXT when any of them is past bit 31) and return alen. 0 when
 * it is not that reply or it failed; -1 when arg is too short or too long
 * to hold the flags. */
long d9_fuse_init_reply(const void *hdr, size_t hlen, const void *arg, size_t alen,
                        uint64_t unique, uint64_t add, unsigned char *out);

#endif
