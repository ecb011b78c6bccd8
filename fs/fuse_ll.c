/* fuse_ll.c - the FUSE low-level front end: serves a d9_mount read-only.
 *
 * A thin adapter: every answer comes from mapper/mount.h. Inode numbers are
 * node index + 1 (the root, node 0, is FUSE_ROOT_ID). The tree never changes
 * while mounted, so entries and attributes carry long timeouts, files are
 * opened with keep_cache and directories with cache_readdir; the kernel page
 * cache then serves repeated reads without asking us.
 *
 * Read sizes: libfuse 3.14 sizes its request buffer for 256 pages, so the
 * kernel negotiates max_pages = 256 and no request exceeds 1 MiB. Buffered
 * reads arrive as readahead chunks, capped by the backing device's
 * read_ahead_kb (128 KiB by default, whatever max_readahead says), so we
 * raise /sys/class/bdi/MAJ:MIN/read_ahead_kb of our own mount when allowed.
 *
 * Zero-copy replies: bytes that a read takes unchanged from a source shard
 * (d9_mount_read_pieces) are spliced from the shard into a per-thread pipe,
 * computed bytes are written into it, the shards are checked unchanged,
 * and the pipe goes to the kernel with fuse_reply_data (FUSE_CAP_SPLICE_
 * WRITE). That saves the copy through a user buffer: a quarter of the
 * daemon's CPU on unchanged tensors (docs/performance.md). A pipe holds at
 * most fs.pipe-max-size bytes (1 MiB unless raised; more needs
 * CAP_SYS_RESOURCE) and libfuse stages the reply and its header in a pipe
 * of its own, so with the default limit requests are capped a little
 * under 1 MiB (1008 KiB; a 1 MiB pread takes two requests), and a request
 * that does not fit (-o max_read=1024) is answered by copy. Splicing the
 * source into our pipe before replying, rather than handing libfuse the
 * shard's fd, keeps the reply contract: a shard truncated under the mount
 * is caught (short splice or the check) and answered with EIO or ESTALE,
 * where libfuse would send a short reply. The pipe holds references to the
 * shard's pages, not copies, so a change in the microseconds between the
 * check and the kernel's copy is served; a second check reports it.
 *
 * Direct I/O (-o direct_io): tensor files are opened with FOPEN_DIRECT_IO,
 * so read() bypasses FUSE's page cache: a reply is copied straight into the
 * reader's buffer, with none of the page-cache page allocation, insertion
 * and second copy that bound a buffered cold read (docs/performance.md).
 * st_blksize is raised to 4 MiB so that cat and cp read in 4 MiB calls,
 * which the kernel sends as max_read requests: one after another for a
 * plain read(), together for AIO readers (async direct I/O is on), and
 * computing reads are split across threads (mapper/readpool.c). Re-reads are not
 * cached and come back to us. Shared mmap of a direct_io file needs
 * FUSE_DIRECT_IO_ALLOW_MMAP (kernel 6.6+, an INIT flag in flags2 that
 * libfuse 3.14 does not know): the session's I/O goes through io_read /
 * io_writev, which note the kernel's INIT offer and add the flag to
 * libfuse's INIT reply. A kernel that does not offer it gets the buffered
 * path, so safetensors' mmap keeps working either way.
 *
 * Dynamic files (.d9dfs/stats.json) are rendered once per open into a
 * buffer owned by the open file (fi->fh), exactly st_size bytes, and read
 * with direct_io, so each open reads its own rendering, not cached pages.
 */
#define FUSE_USE_VERSION 34

#include "fs/fs.h"
#include "fs/fuse_init.h"
#include "fs/host.h"
#include "fs/log.h"
#include "fs/pipe.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static const double FS_TIMEOUT = 86400.0; /* seconds; the tree is immutable */
enum {
  FS_MAX_READ = 1024 * 1024, /* bytes; libfuse 3.14's request buffer limit */
  FS_MIN_READ = 4096,        /* bytes; the kernel's floor for max_read */
  FS_MAX_DEPTH = 256,        /* deepest path printed in an error line */
  FS_PAGE = 4096,            /* bytes; the pipe's unit: one page per slot */
  FS_DIO_BLKSIZE = 4 << 20,  /* bytes; st_blksize with -o direct_io */
};

/* Per-mount state, reached through fuse_req_userdata(). Every field is set
 * before the session starts (pipe_size at the latest in INIT, which the
 * kernel answers before it sends any read) and only read afterwards, so no
 * lock guards it. */
typedef struct fs_state {
  d9_mount *m;             /* borrowed; outlives the session */
  int nnodes;
  struct timespec mtime;   /* mount time: atime/mtime/ctime of every node */
  unsigned max_read;       /* bytes; largest read request */
  unsigned readahead;      /* bytes; kernel readahead window */
  uint64_t total_bytes;    /* sum of file sizes, for statfs */
  pthread_key_t buf_key;   /* -> rbuf: this thread's reusable read buffer */
  size_t pipe_size;        /* bytes; 0 = no splice replies */
  size_t splice_max;       /* bytes; largest reply that goes through a pipe */
  int direct_io;           /* tensor files bypass the page cache; cleared in
                              INIT when the kernel cannot mmap them */
  uint64_t init_unique;    /* the kernel's INIT request until answered, else 0 */
  uint64_t init_flags;     /* its flags | flags2 << 32 */
  int has_uid, has_gid;    /* -o uid=, gid= given: the owner of every node */
  uid_t uid;
  gid_t gid;
} fs_state;

/* A read buffer and a splice pipe kept per thread, so that big replies do
 * not fault in fresh pages on every request. Freed by the key's destructor
 * at thread exit. */
typedef struct rbuf {
  size_t cap;    /* bytes */
  void *data;    /* page-aligned, cap bytes */
  int pipe[2];   /* read, write end (O_NONBLOCK); -1 until first needed */
  int no_pipe;   /* creating the pipe failed: copy replies on this thread */
} rbuf;

/* The rendered content of an open dynamic file; owned by fi->fh. */
typedef struct dyn_file {
  char *data;  /* malloc'd by d9_mount_render */
  size_t len;  /* bytes */
} dyn_file;

static void pipe_close(rbuf *b) {
  if (b->pipe[0] >= 0) close(b->pipe[0]);
  if (b->pipe[1] >= 0) close(b->pipe[1]);
  b->pipe[0] = b->pipe[1] = -1;
}

static void rbuf_free(void *p) {
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
static void *rbuf_get(const fs_state *s, size_t n) {
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

/* The pieces as one reply in buf, when they cannot be spliced: the memory
 * pieces already sit in place (pieces of buf, in order), the source ranges
 * are read into the gaps, then the shards are checked as a pread would
 * be. Returns 0, -EIO (a shard ended early) or -ESTALE. */
static int pieces_to_buf(fs_state *s, int idx, unsigned char *buf, const d9_piece *p,
                         int np) {
  return d9_mount_pieces_to_buf(s->m, idx, buf, p, np);
}

/* The node behind an inode, or NULL for an inode we never handed out. */
static const d9_vnode *ino_node(const fs_state *s, fuse_ino_t ino, int *idx) {
  if (ino == 0 || ino > (fuse_ino_t)s->nnodes) return NULL;
  *idx = (int)(ino - 1);
  return d9_mount_node(s->m, *idx);
}

/* ino_node() for a request: on NULL the request has been answered, with
 * ENOENT, or with ENOTDIR when want_dir is set and the node is no dir. */
static const d9_vnode *req_node(fuse_req_t req, fuse_ino_t ino, int want_dir,
                                int *idx) {
  const d9_vnode *n = ino_node(fuse_req_userdata(req), ino, idx);
  int err = !n ? ENOENT : want_dir && n->kind != D9_NODE_DIR ? ENOTDIR : 0;
  if (err) fuse_reply_err(req, err);
  return err ? NULL : n;
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

static void fill_stat(const fs_state *s, int idx, const d9_vnode *n,
                      struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)idx + 1;
  if (n->kind == D9_NODE_DIR) {
    st->st_mode = S_IFDIR | (n->mode & 0555);
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | (n->mode & 0444);
    st->st_nlink = 1;
    st->st_size = (off_t)n->size; /* dynamic files render to exactly this */
  }
  st->st_uid = s->has_uid ? s->uid : n->uid; /* mode and owner from the sources */
  st->st_gid = s->has_gid ? s->gid : n->gid; /* (mapper/tree.c) unless -o uid=, gid= */
  /* cp, cat, Python size their reads by it */
  st->st_blksize = s->direct_io ? FS_DIO_BLKSIZE : s->max_read;
  st->st_blocks = (blkcnt_t)((st->st_size + 511) / 512);
  st->st_atim = st->st_mtim = st->st_ctim = s->mtime;
}

static void fs_init(void *userdata, struct fuse_conn_info *conn) {
  fs_state *s = userdata;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (s->pipe_size && (conn->capable & FUSE_CAP_SPLICE_WRITE))
    conn->want |= FUSE_CAP_SPLICE_WRITE;
  else
    s->pipe_size = 0; /* no splice to the device: copy replies */
  /* libfuse refuses INIT unless this equals the max_read mount option. */
  conn->max_read = s->max_read;
  /* Not min()'d with the kernel's offer: the kernel takes min(bdi
   * read_ahead_kb, this), and d9_host_set_readahead() raised read_ahead_kb. */
  conn->max_readahead = s->readahead;
  if (s->direct_io && !(s->init_flags & D9_FUSE_DIRECT_IO_ALLOW_MMAP)) {
    s->direct_io = 0;
    fprintf(stderr, "d9dfs: -o direct_io: this kernel cannot mmap direct_io files "
            "(no FUSE_DIRECT_IO_ALLOW_MMAP); reads go through the page cache\n");
  }
  if (s->direct_io && (conn->capable & FUSE_CAP_ASYNC_DIO))
    conn->want |= FUSE_CAP_ASYNC_DIO; /* AIO readers: a read's requests at once */
  char fe[160];
  snprintf(fe, sizeof fe,
           "\"direct_io\": %s, \"splice\": %s, \"max_read\": %u, \"readahead\": %u",
           s->direct_io ? "true" : "false", s->pipe_size ? "true" : "false", s->max_read,
           s->readahead);
  d9_mount_set_frontend(s->m, fe); /* out of memory: stats.json just lacks it */
}

/* The session's I/O (fuse_session_custom_io): plain read/writev/splice on
 * /dev/fuse, except that io_read notes the kernel's INIT request and
 * io_writev adds FUSE_DIRECT_IO_ALLOW_MMAP to its reply when direct_io is
 * on (see "Direct I/O" above). The kernel sends nothing else until INIT is
 * answered, so init_unique is set and cleared with no other request in
 * flight; the atomics only order it for threads started later. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata) {
  fs_state *s = userdata;
  ssize_t r = read(fd, buf, len);
  uint64_t unique, flags;
  if (r > 0 && d9_fuse_init_request(buf, (size_t)r, &unique, &flags)) {
    s->init_flags = flags;
    __atomic_store_n(&s->init_unique, unique, __ATOMIC_RELEASE);
  }
  return r;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
  fs_state *s = userdata;
  uint64_t want = __atomic_load_n(&s->init_unique, __ATOMIC_ACQUIRE);
  if (!want || count != 2) return writev(fd, iov, count);
  unsigned char out[D9_INIT_OUT_MAX]; /* libfuse's INIT reply, extended */
  long n = d9_fuse_init_reply(iov[0].iov_base, iov[0].iov_len, iov[1].iov_base,
                              iov[1].iov_len, want, s->direct_io ? D9_FUSE_DIRECT_IO_ALLOW_MMAP : 0,
                              out);
  if (n == 0) return writev(fd, iov, count); /* not the INIT reply */
  __atomic_store_n(&s->init_unique, 0, __ATOMIC_RELEASE);
  if (n < 0) { /* a reply we cannot extend: send it as is, buffered */
    s->direct_io = 0;
    return writev(fd, iov, count);
  }
  struct iovec v[2] = {iov[0], {out, (size_t)n}};
  return writev(fd, v, 2);
}

static ssize_t io_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                         unsigned flags, void *userdata) {
  (void)userdata;
  return splice(fdin, offin, fdout, offout, len, flags);
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  const fs_state *s = fuse_req_userdata(req);
  int pidx, idx;
  const d9_vnode *p = req_node(req, parent, 1, &pidx);
  if (!p) return;
  if (!strcmp(name, "."))
    idx = pidx;
  else if (!strcmp(name, ".."))
    idx = p->parent;
  else
    idx = d9_mount_lookup(s->m, pidx, name);

  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  e.entry_timeout = FS_TIMEOUT;
  if (idx == -ENOENT) { /* ino 0: a negative entry the kernel may cache */
    fuse_reply_entry(req, &e);
    return;
  }
  const d9_vnode *n = idx < 0 ? NULL : d9_mount_node(s->m, idx);
  if (!n) {
    fuse_reply_err(req, idx < 0 ? -idx : EIO);
    return;
  }
  e.ino = (fuse_ino_t)idx + 1;
  e.attr_timeout = FS_TIMEOUT;
  fill_stat(s, idx, n, &e.attr);
  fuse_reply_entry(req, &e);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi) {
  (void)fi;
  const fs_state *s = fuse_req_userdata(req);
  int idx;
  const d9_vnode *n = req_node(req, ino, 0, &idx);
  if (!n) return;
  struct stat st;
  fill_stat(s, idx, n, &st);
  fuse_reply_attr(req, &st, FS_TIMEOUT);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi) {
  int idx;
  if (!req_node(req, ino, 1, &idx)) return;
  fi->cache_readdir = 1; /* listings never change: keep them cached */
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

/* Entry k of a directory listing is ".", "..", then children[k - 2]; the
 * offset handed to the kernel with entry k is k + 1, where the next
 * readdir resumes. Entries that do not fit in size wait for that call. */
static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi) {
  (void)fi;
  const fs_state *s = fuse_req_userdata(req);
  int idx;
  const d9_vnode *n = req_node(req, ino, 1, &idx);
  if (!n) return;
  int64_t total = 2 + (int64_t)n->nchildren;
  if (off < 0 || off >= total) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  char *buf = rbuf_get(s, size);
  if (!buf) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  size_t pos = 0;
  for (int64_t k = off; k < total; k++) {
    int cidx = k == 0 ? idx : k == 1 ? n->parent : n->children[k - 2];
    const char *name = k == 0 ? "." : k == 1 ? ".." : NULL;
    const d9_vnode *c = d9_mount_node(s->m, cidx);
    if (!c) continue; /* a broken tree; never seen with a valid mount */
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = (ino_t)cidx + 1;
    st.st_mode = c->kind == D9_NODE_DIR ? S_IFDIR : S_IFREG;
    size_t len = fuse_add_direntry(req, buf + pos, size - pos,
                                   name ? name : c->name, &st, k + 1);
    if (len > size - pos) break;
    pos += len;
  }
  fuse_reply_buf(req, buf, pos);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  fs_state *s = fuse_req_userdata(req);
  int idx;
  const d9_vnode *n = req_node(req, ino, 0, &idx);
  if (!n) return;
  if (n->kind == D9_NODE_DIR) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_APPEND))) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->noflush = 1; /* nothing to flush on close */
  if (n->kind == D9_NODE_FILE) {
    fi->keep_cache = 1; /* immutable: cached pages stay valid across opens */
    fi->direct_io = s->direct_io;
    fuse_reply_open(req, fi);
    return;
  }
  dyn_file *d = calloc(1, sizeof *d);
  if (!d) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  int err = d9_mount_render(s->m, idx, &d->data, &d->len);
  if (err < 0) {
    free(d);
    fuse_reply_err(req, -err);
    return;
  }
  fi->fh = (uint64_t)(uintptr_t)d;
  fi->direct_io = 1; /* this open's rendering, never the page cache's */
  if (fuse_reply_open(req, fi) != 0) { /* interrupted: no release will come */
    free(d->data);
    free(d);
  }
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
  return 0;
}

/* Reply contract: exactly the bytes d9_mount_read produced, 0 bytes at or
 * past EOF, or an errno. A short count inside the file would make the kernel
 * shrink its idea of the file size, so it is turned into EIO. */
static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  fs_state *s = fuse_req_userdata(req);
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (fi->fh) {
    const dyn_file *d = (const dyn_file *)(uintptr_t)fi->fh;
    size_t o = (uint64_t)off < d->len ? (size_t)off : d->len;
    size_t k = d->len - o < size ? d->len - o : size;
    fuse_reply_buf(req, d->data + o, k);
    return;
  }
  int idx;
  const d9_vnode *n = req_node(req, ino, 0, &idx);
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
  void *buf = rbuf_get(s, size);
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
    if (e == -EAGAIN) e = pieces_to_buf(s, idx, buf, pieces, np); /* answer by copy */
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

static void fs_release(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi) {
  (void)ino;
  dyn_file *d = (dyn_file *)(uintptr_t)fi->fh;
  if (d) free(d->data);
  free(d);
  fuse_reply_err(req, 0);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  const fs_state *s = fuse_req_userdata(req);
  struct statvfs st;
  memset(&st, 0, sizeof st);
  st.f_bsize = st.f_frsize = 4096;
  st.f_blocks = (fsblkcnt_t)((s->total_bytes + 4095) / 4096);
  st.f_files = (fsfilcnt_t)s->nnodes;
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

static void fs_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  const fs_state *s = fuse_req_userdata(req);
  int idx;
  if (!ino_node(s, ino, &idx))
    fuse_reply_err(req, ENOENT);
  else
    fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* No extended attributes. ENOSYS makes the kernel stop asking (it answers
 * EOPNOTSUPP itself), which saves a round trip per file in `ls -l`. */
static void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        size_t size) {
  (void)ino, (void)name, (void)size; fuse_reply_err(req, ENOSYS);
}
static void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  (void)ino, (void)size; fuse_reply_err(req, ENOSYS);
}

/* Every operation that would change the tree: EROFS. The "ro" mount
 * option makes the kernel refuse most of them before they reach us. */
static void fs_setattr(fuse_req_t req, fuse_ino_t i, struct stat *a, int t,
                       struct fuse_file_info *fi) {
  (void)i, (void)a, (void)t, (void)fi; fuse_reply_err(req, EROFS);
}
static void fs_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
                     dev_t d) {
  (void)p, (void)n, (void)m, (void)d; fuse_reply_err(req, EROFS);
}
static void fs_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m) {
  (void)p, (void)n, (void)m; fuse_reply_err(req, EROFS);
}
static void fs_unlink(fuse_req_t req, fuse_ino_t p, const char *n) {
  (void)p, (void)n; fuse_reply_err(req, EROFS);
}
static void fs_symlink(fuse_req_t req, const char *l, fuse_ino_t p,
                       const char *n) {
  (void)l, (void)p, (void)n; fuse_reply_err(req, EROFS);
}
static void fs_rename(fuse_req_t req, fuse_ino_t p, const char *n,
                      fuse_ino_t np, const char *nn, unsigned f) {
  (void)p, (void)n, (void)np, (void)nn, (void)f; fuse_reply_err(req, EROFS);
}
static void fs_link(fuse_req_t req, fuse_ino_t i, fuse_ino_t np,
                    const char *nn) {
  (void)i, (void)np, (void)nn; fuse_reply_err(req, EROFS);
}
static void fs_write(fuse_req_t req, fuse_ino_t i, const char *b, size_t n,
                     off_t o, struct fuse_file_info *fi) {
  (void)i, (void)b, (void)n, (void)o, (void)fi; fuse_reply_err(req, EROFS);
}
static void fs_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
                      struct fuse_file_info *fi) {
  (void)p, (void)n, (void)m, (void)fi; fuse_reply_err(req, EROFS);
}
static void fs_setxattr(fuse_req_t req, fuse_ino_t i, const char *n,
                        const char *v, size_t sz, int f) {
  (void)i, (void)n, (void)v, (void)sz, (void)f; fuse_reply_err(req, EROFS);
}
static void fs_removexattr(fuse_req_t req, fuse_ino_t i, const char *n) {
  (void)i, (void)n; fuse_reply_err(req, EROFS);
}
static void fs_fallocate(fuse_req_t req, fuse_ino_t i, int m, off_t o,
                         off_t l, struct fuse_file_info *fi) {
  (void)i, (void)m, (void)o, (void)l, (void)fi; fuse_reply_err(req, EROFS);
}
static void fs_copy_file_range(fuse_req_t req, fuse_ino_t ii, off_t oi,
                               struct fuse_file_info *fii, fuse_ino_t io,
                               off_t oo, struct fuse_file_info *fio,
                               size_t n, int f) {
  (void)ii, (void)oi, (void)fii, (void)io, (void)oo, (void)fio, (void)n, (void)f;
  fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_init,
    .lookup = fs_lookup,
    .getattr = fs_getattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .release = fs_release,
    .statfs = fs_statfs,
    .access = fs_access,
    .getxattr = fs_getxattr,
    .listxattr = fs_listxattr,
    .setattr = fs_setattr,
    .mknod = fs_mknod,
    .mkdir = fs_mkdir,
    .unlink = fs_unlink,
    .rmdir = fs_unlink, /* same signature, same answer */
    .symlink = fs_symlink,
    .rename = fs_rename,
    .link = fs_link,
    .write = fs_write,
    .create = fs_create,
    .setxattr = fs_setxattr,
    .removexattr = fs_removexattr,
    .fallocate = fs_fallocate,
    .copy_file_range = fs_copy_file_range,
};

/* "fsname=" and the like take a string through libfuse's option parser:
 * escape its separators (',' and '\\') into out (cap bytes). 0, or -1
 * when it does not fit. */
static int opt_escape(const char *v, char *out, size_t cap) {
  size_t n = 0;
  for (; *v; v++) {
    if (n + 3 > cap) return -1;
    if (*v == ',' || *v == '\\') out[n++] = '\\';
    out[n++] = *v;
  }
  out[n] = 0;
  return 0;
}

int d9_fs_serve(d9_mount *m, const char *mountpoint, const d9_fs_opts *o,
                d9_diag *diag) {
  static const d9_fs_opts defaults = {.readahead_kb = -1};
  if (!o) o = &defaults;
  if (!m || !mountpoint) return d9_diag_fail(diag, EINVAL, "no mount or mount point");

  char real[PATH_MAX];
  int err = d9_host_check_mountpoint(mountpoint, real, diag);
  if (!err) err = d9_mount_check_mountpoint(m, real, diag);
  if (err) return err;
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return d9_diag_fail(diag, errno, "/dev/fuse: %s", strerror(errno));
  close(fd);

  fs_state s;
  memset(&s, 0, sizeof s);
  s.m = m;
  s.nnodes = d9_mount_nnodes(m);
  s.has_uid = o->has_uid, s.uid = (uid_t)o->uid; /* -o uid=, gid=: override the sources' */
  s.has_gid = o->has_gid, s.gid = (gid_t)o->gid;
  clock_gettime(CLOCK_REALTIME, &s.mtime);
  s.direct_io = o->direct_io;
  if (o->splice) { /* see "Zero-copy replies" above */
    s.pipe_size = d9_pipe_max_size(2 * (size_t)FS_MAX_READ);
    s.splice_max = s.pipe_size > 4 * FS_PAGE ? s.pipe_size - 4 * FS_PAGE : 0;
    if (s.splice_max > FS_MAX_READ) s.splice_max = FS_MAX_READ;
    if (s.splice_max < FS_MIN_READ) s.pipe_size = s.splice_max = 0;
  }
  /* Requests that splice by default: readahead alone would not do, as the
   * kernel sends a window and its async part as max_read-sized pieces. */
  unsigned kb = o->max_read_kb       ? o->max_read_kb
                : s.splice_max != 0 ? (unsigned)(s.splice_max / 1024)
                                    : FS_MAX_READ / 1024;
  s.max_read = kb >= FS_MAX_READ / 1024 ? FS_MAX_READ
               : kb * 1024 < FS_MIN_READ ? FS_MIN_READ : kb * 1024;
  unsigned ra_kb = o->readahead_kb >= 0 ? (unsigned)o->readahead_kb
                                        : s.max_read / 1024;
  if (ra_kb > 1024 * 1024) ra_kb = 1024 * 1024; /* 1 GiB is plenty */
  s.readahead = ra_kb * 1024;
  for (int i = 0; i < s.nnodes; i++) {
    const d9_vnode *n = d9_mount_node(m, i);
    if (n && n->kind == D9_NODE_FILE) s.total_bytes += n->size;
  }
  char fsname[2 * PATH_MAX], subtype[256], mopts[2 * PATH_MAX + 512];
  if (opt_escape(o->fsname ? o->fsname : "d9dfs", fsname, sizeof fsname) ||
      opt_escape(o->subtype ? o->subtype : "d9dfs", subtype, sizeof subtype))
    return d9_diag_fail(diag, ENAMETOOLONG, "-o fsname or subtype: too long");
  /* The log's sink before anything is mounted: -o log=FILE is relative to
   * the working directory, which fuse_daemonize() leaves for / */
  d9_log *log = NULL;
  if ((err = d9_log_open(real, o->foreground || o->debug, o->log_file, &log, diag)))
    return err;
  if ((err = pthread_key_create(&s.buf_key, rbuf_free)) != 0) {
    d9_log_close(log);
    return d9_diag_fail(diag, err, "cannot create a thread key: %s", strerror(err));
  }

  snprintf(mopts, sizeof mopts,
           "fsname=%s,subtype=%s,ro,default_permissions,max_read=%u%s%s", fsname, subtype,
           s.max_read, o->allow_other ? ",allow_other" : "",
           o->auto_unmount ? ",auto_unmount" : "");
  char *argv[] = {"d9dfs", "-o", mopts, "-d", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(o->debug ? 4 : 3, argv);
  struct fuse_session *se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, &s);
  if (!se) {
    err = d9_diag_fail(diag, EINVAL, "cannot create a fuse session with -o %s", mopts);
    goto out_key;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    err = d9_diag_fail(diag, EIO, "cannot install signal handlers");
    goto out_session;
  }
  if (fuse_session_mount(se, real) != 0) { /* libfuse printed why */
    err = d9_diag_fail(diag, EIO, "%s: fuse mount failed", mountpoint);
    goto out_signals;
  }
  static const struct fuse_custom_io io = {
      .read = io_read, .writev = io_writev, .splice_send = io_splice};
  if (fuse_session_custom_io(se, &io, fuse_session_fd(se)) != 0) {
    err = d9_diag_fail(diag, EIO, "%s: cannot set the session's I/O", mountpoint);
    goto out_unmount;
  }
  /* Before the loop answers INIT, so the kernel's min(read_ahead_kb,
   * max_readahead) sees the raised value. */
  d9_host_set_readahead(real, ra_kb, o->readahead_kb >= 0);
  /* The parent exits in here once the child is set up: the mount is live.
   * The child's stdio then points at /dev/null, and fd 2 becomes the
   * relay to the log (fs/log.h). */
  if (fuse_daemonize(o->foreground || o->debug) != 0) {
    err = d9_diag_fail(diag, EIO, "%s: cannot daemonize", mountpoint);
    goto out_unmount;
  }
  if (d9_log_start(log) != 0) /* messages then go where stderr went */
    fprintf(stderr, "d9dfs: %s: cannot start the log relay\n", real);
  if (o->single_thread) {
    err = fuse_session_loop(se);
  } else {
    struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 10};
    err = fuse_session_loop_mt(se, &cfg);
  }
  if (err > 0) err = 0; /* ended by SIGINT/SIGTERM/SIGHUP: a clean exit */
  if (err < 0) d9_diag_fail(diag, -err, "%s: fuse session: %s", mountpoint, strerror(-err));

out_unmount:
  fuse_session_unmount(se);
out_signals:
  fuse_remove_signal_handlers(se);
out_session:
  fuse_session_destroy(se);
out_key:
  rbuf_free(pthread_getspecific(s.buf_key)); /* the destructor skips this thread */
  pthread_key_delete(s.buf_key);
  fuse_opt_free_args(&args);
  d9_log_close(log); /* last: the session's own last words go through it */
  return err;
}
