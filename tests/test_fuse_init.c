/* test_fuse_init.c - the INIT bytes the FUSE front end reads and extends
 * (fs/fuse_init.c): the kernel's offer is read from the request only when
 * it is an INIT request long enough to hold it (flags2 only with
 * FUSE_INIT_EXT); libfuse's reply is extended only when it answers that
 * request without error, every other byte of it unchanged, and a reply
 * too short or too long to hold the flags is refused. The offsets are
 * checked against a request and a reply built field by field here from
 * the protocol's struct layouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "fs/fuse_init.h"

/* struct fuse_in_header + struct fuse_init_in, protocol 7.36 */
typedef struct {
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
  uint32_t major, minor, max_readahead, flags, flags2, unused[11];
} init_request;

/* struct fuse_out_header, struct fuse_init_out */
typedef struct {
  uint32_t len;
  int32_t error;
  uint64_t unique;
} out_header;

typedef struct {
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
  uint16_t request_timeout, unused[11];
} init_out;

static init_request request(uint32_t opcode, uint32_t flags, uint32_t flags2) {
  init_request r;
  memset(&r, 0, sizeof r);
  r.len = sizeof r, r.opcode = opcode, r.unique = 0x1122334455667788ull;
  r.major = 7, r.minor = 44, r.flags = flags, r.flags2 = flags2;
  return r;
}

static void test_request(void **state) {
  (void)state;
  assert_int_equal(offsetof(init_request, flags), D9_FUSE_IN_HDR + D9_INIT_IN_FLAGS);
  assert_int_equal(offsetof(init_request, flags2), D9_FUSE_IN_HDR + D9_INIT_IN_FLAGS2);
  uint64_t unique = 0, flags = 0;

  /* INIT_EXT set: flags2 is the high half */
  init_request r = request(26, (uint32_t)D9_FUSE_INIT_EXT | 0x5, 0x10);
  assert_int_equal(d9_fuse_init_request(&r, sizeof r, &unique, &flags), 1);
  assert_int_equal(unique, 0x1122334455667788ull);
  assert_int_equal(flags, D9_FUSE_INIT_EXT | 0x5 | (0x10ull << 32));
  assert_true(flags & D9_FUSE_DIRECT_IO_ALLOW_MMAP);

  /* without INIT_EXT, flags2 is not read (an old kernel's padding) */
  r = request(26, 0x5, 0x10);
  assert_int_equal(d9_fuse_init_request(&r, sizeof r, &unique, &flags), 1);
  assert_int_equal(flags, 0x5);

  /* not INIT, or too short to hold flags2: not taken, outputs untouched */
  unique = 7, flags = 9;
  r = request(15, (uint32_t)D9_FUSE_INIT_EXT, 0x10); /* FUSE_READ */
  assert_int_equal(d9_fuse_init_request(&r, sizeof r, &unique, &flags), 0);
  r = request(26, (uint32_t)D9_FUSE_INIT_EXT, 0x10);
  assert_int_equal(d9_fuse_init_request(&r, offsetof(init_request, flags2) + 3, &unique,
                                        &flags), 0);
  assert_int_equal(d9_fuse_init_request(NULL, 0, &unique, &flags), 0);
  assert_true(unique == 7 && flags == 9);
  assert_int_equal(d9_fuse_init_request(&r, offsetof(init_request, flags2) + 4, &unique,
                                        &flags), 1);
}

static void test_reply(void **state) {
  (void)state;
  assert_int_equal(offsetof(init_out, flags), D9_INIT_OUT_FLAGS);
  assert_int_equal(offsetof(init_out, flags2), D9_INIT_OUT_FLAGS2);
  assert_int_equal(sizeof(out_header), D9_FUSE_OUT_HDR);
  out_header h = {sizeof h + 64, 0, 42};
  init_out a;
  memset(&a, 0xab, sizeof a); /* every other byte must come back as is */
  a.flags = 0x3, a.flags2 = 0x1;
  unsigned char out[D9_INIT_OUT_MAX];

  long n = d9_fuse_init_reply(&h, sizeof h, &a, 64, 42, D9_FUSE_DIRECT_IO_ALLOW_MMAP, out);
  assert_int_equal(n, 64);
  init_out b;
  memcpy(&b, out, 64);
  assert_int_equal(b.flags, 0x3 | (uint32_t)D9_FUSE_INIT_EXT);
  assert_int_equal(b.flags2, 0x1 | (uint32_t)(D9_FUSE_DIRECT_IO_ALLOW_MMAP >> 32));
  b.flags = a.flags, b.flags2 = a.flags2;
  assert_memory_equal(&a, &b, 64);

  /* nothing past bit 31 to add: INIT_EXT is not forced on */
  n = d9_fuse_init_reply(&h, sizeof h, &a, 64, 42, 0x100, out);
  memcpy(&b, out, 64);
  assert_int_equal(n, 64);
  assert_int_equal(b.flags, 0x103);
  assert_int_equal(b.flags2, 0x1);

  /* another request's reply, an error reply, a short header: left alone */
  assert_int_equal(d9_fuse_init_reply(&h, sizeof h, &a, 64, 43, D9_FUSE_INIT_EXT, out), 0);
  out_header e = {sizeof e, -22, 42};
  assert_int_equal(d9_fuse_init_reply(&e, sizeof e, &a, 64, 42, D9_FUSE_INIT_EXT, out), 0);
  assert_int_equal(d9_fuse_init_reply(&h, 15, &a, 64, 42, D9_FUSE_INIT_EXT, out), 0);

  /* an argument that cannot hold flags2, or is larger than the buffer */
  assert_int_equal(d9_fuse_init_reply(&h, sizeof h, &a, D9_INIT_OUT_FLAGS2 + 3, 42,
                                      D9_FUSE_INIT_EXT, out), -1);
  unsigned char big[D9_INIT_OUT_MAX + 1] = {0};
  assert_int_equal(d9_fuse_init_reply(&h, sizeof h, big, sizeof big, 42, D9_FUSE_INIT_EXT,
                                      out), -1);
  assert_int_equal(d9_fuse_init_reply(&h, sizeof h, NULL, 64, 42, D9_FUSE_INIT_EXT, out), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request),
      cmocka_unit_test(test_reply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
