/* read.c - the read path of the FUSE front end (fuse_ll.c explains the
 * choices: exact-size replies, zero-copy replies through a per-thread
 * pipe, direct I/O): d9_fs_read, and the per-thread buffers and pipes it
 * and readdir use. */
#include "fs/fs_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/pipe.h"
#include "mapper/piece.h"

static void pipe_close(rbuf *b) {
  if (b->pipe[0] >= 0) close(b->pipe[0]);
  if (b->pipe[1] >= 0) close(b->pipe[1]);
  b->pipe[0] = b->pipe[1] = -1;
}

void d9_fs_rbuf_free(void *p) {
  rbuf *b = p;
  if (b) {
    pipe_close(b);
    free(b->data);
  }
  free(b);
}

/* This thread's rbuf, created empty on first use; NULL when out of memory. */
static rbuf *rbuf_of(const fs_state *s) {
  rbuf *b = pthread_getspecific(s->buf_key);
  if (b) return b;
  if (!(b = calloc(1, sizeof *b))) return NULL;
  b->pipe[0] = b->pipe[1] = -1;
  if (pthread_setspecific(s->buf_key, b)) {
    free(b);
    return NULL;
  }
  return b;
}

/* This thread's buffer of at least n bytes, or NULL when out of memory. */
void *d9_fs_rbuf_get(const fs_state *s, size_t n) {
  rbuf *b = rbuf_of(s);
  if (!b) return NULL;
  if (b->cap >= n) return b->data;
  if (n > SIZE_MAX - 65535) return NULL;
  size_t cap = (n + 65535) & ~(size_t)65535; /* grow in 64 KiB steps */
  void *data = aligned_alloc(4096, cap);
  if (!data) return NULL;
  free(b->data);
  b->data = data;
  b->cap = cap;
  return data;
}

/* Make sure this thread has its (empty) splice pipe in b->pipe: 0, or -1
 * when there is none: not enabled, or creating it failed on this thread. */
static int pipe_get(const fs_state *s, rbuf *b) {
  if (!s->pipe_size || b->no_pipe) return -1;
  if (b->pipe[0] >= 0) return 0;
  if (pipe2(b->pipe, O_NONBLOCK | O_CLOEXEC)) {
    b->pipe[0] = b->pipe[1] = -1;
    b->no_pipe = 1;
    return -1;
  }
  if (fcntl(b->pipe[0], F_SETPIPE_SZ, (int)s->pipe_size) < (int)s->pipe_size) {
    pipe_close(b);
    b->no_pipe = 1;
    return -1;
  }
  return 0;
}

/* "/dir/name" of node idx into out (for error lines; truncated if long). */
static void node_path(const fs_state *s, int idx, char *out, size_t size) {
  int chain[FS_MAX_DEPTH], depth = 0;
  const d9_vnode *n;
  while (depth < FS_MAX_DEPTH && idx > 0 && (n = d9_mount_node(s->m, idx))) {
    chain[depth++] = idx;
    if (n->parent == idx) break;
    idx = n->parent;
  }
  size_t pos = 0;
  out[0] = 0;
  while (depth-- > 0 && pos + 1 < size) {
    int w = snprintf(out + pos, size - pos, "/%s",
                     d9_mount_node(s->m, chain[depth])->name);
    if (w < 0) break;
    pos += (size_t)w;
  }
  if (!out[0]) snprintf(out, size, "/");
}

/* Answer a read whose pieces include source ranges through this thread's
 * pipe. Returns 0 once answered, -EAGAIN when the caller should answer by
 * copy instead (no pipe, or it would overflow), or another -errno for the
 * caller to answer (the source changed or shrank under the mount). */
static int reply_spliced(fuse_req_t req, fs_state *s, rbuf *b, int idx, uint64_t off,
                         size_t r, const d9_piece *p, int np) {
  if (r > s->splice_max || d9_pipe_slots(p, np) + 1 > s->pipe_size / FS_PAGE ||
      pipe_get(s, b) < 0)
    return -EAGAIN;
  int e = d9_pipe_fill(b->pipe[1], p, np);
  if (e != -EAGAIN) { /* after the copy, as pread; names a changed shard */
    int c = d9_mount_check_pieces(s->m, idx, p, np);
    if (c) e = c;
  }
  if (e) {
    pipe_close(b); /* drop what was staged; a new pipe next time */
    return e;
  }
  struct fuse_bufvec bv = FUSE_BUFVEC_INIT(r);
  bv.buf[0].flags = FUSE_BUF_IS_FD;
  bv.buf[0].fd = b->pipe[0];
  e = fuse_reply_data(req, &bv, 0);
  if (e || d9_pipe_pending(b->pipe[0])) /* not all consumed: start clean */
    pipe_close(b);
  /* The pipe held references to the shard's pages, which the kernel copied
   * only now: a shard changed between the check and this copy was served
   * as it then was. Say so (the check logs the shard, counts an error). */
  if (!e && d9_mount_check_pieces(s->m, idx, p, np))
    fprintf(stderr, "d9dfs: read %s: offset %llu length %zu: served while its source "
            "changed\n", d9_mount_node(s->m, idx)->name, (unsigned long long)off, r);
  d9_mount_pieces_sent(s->m, p, np); /* the pipe's page references are gone */
  return 0;
}

/* Reply contract: exactly the bytes d9_mount_read produced, 0 bytes at or
 * past EOF, or an errno. A short count inside the file would make the kernel
 * shrink its idea of the file size, so it is turned into EIO. */
void d9_fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  fs_state *s = fuse_req_userdata(req);
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (fi->fh) { /* a dynamic file: this open's rendering */
    const dyn_file *d = (const dyn_file *)(uintptr_t)fi->fh;
    size_t o = (uint64_t)off < d->len ? (size_t)off : d->len;
    size_t k = d->len - o < size ? d->len - o : size;
    /* Reply with a copy: the kernel wakes the reader inside the reply's
     * writev, and its close can have fs_release free d before writev
     * returns here (an ASan daemon, which checks the iovec after the
     * call, aborted on that). */
    char *buf = k ? d9_fs_rbuf_get(s, k) : NULL;
    if (k && !buf) {
      fuse_reply_err(req, ENOMEM);
      return;
    }
    if (k) memcpy(buf, d->data + o, k);
    fuse_reply_buf(req, buf, k);
    return;
  }
  int idx;
  const d9_vnode *n = d9_fs_req_node(req, ino, 0, &idx);
  if (!n) return;
  if (n->kind != D9_NODE_FILE) {
    fuse_reply_err(req, n->kind == D9_NODE_DIR ? EISDIR : EINVAL);
    return;
  }
  if ((uint64_t)off >= n->size) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  if (size > n->size - (uint64_t)off) size = (size_t)(n->size - (uint64_t)off);
  void *buf = d9_fs_rbuf_get(s, size);
  d9_piece pieces[D9_READ_MAXPIECES];
  int np = 0, try_splice = buf && s->pipe_size && size <= s->splice_max;
  ssize_t r = !buf ? -ENOMEM
              : try_splice
                  ? d9_mount_read_pieces(s->m, idx, (uint64_t)off, size, buf, pieces, &np)
                  : d9_mount_read(s->m, idx, (uint64_t)off, size, buf);
  int core_logged = buf && r < 0; /* the core logs its errors: tensor, shard */
  if (r >= 0 && (size_t)r == size && try_splice && (np > 1 || (np == 1 && !pieces[0].mem))) {
    int e = reply_spliced(req, s, pthread_getspecific(s->buf_key), idx, (uint64_t)off, size,
                          pieces, np);
    if (e == 0) return;
    if (e == -EAGAIN) e = d9_mount_pieces_to_buf(s->m, idx, buf, pieces, np); /* answer by copy */
    if (e) r = e;
  }
  if (r < 0 || (size_t)r != size) {
    char path[PATH_MAX], why[64];
    node_path(s, idx, path, sizeof path);
    if (r >= 0) { /* the core promised n bytes */
      snprintf(why, sizeof why, "short read of %zd bytes", r);
      r = -EIO;
    } else {
      snprintf(why, sizeof why, "%s", strerror((int)-r));
    }
    const char *t = n->parent == 0 ? d9_plan_tensor_at(d9_mount_plan(s->m), n->name, off)
                                   : NULL; /* ranks/ files: the core's line names it */
    if (!core_logged)
      fprintf(stderr, "d9dfs: read %s: offset %lld length %zu: tensor '%s': %s\n", path,
              (long long)off, size, t ? t : "(the file's header)", why);
  }
  if (r < 0)
    fuse_reply_err(req, (int)-r);
  else
    fuse_reply_buf(req, buf, (size_t)r);
}
