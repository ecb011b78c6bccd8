/* fuse_ll.c - the FUSE low-level front end: serves a d9_mount read-only
 * (the operations here; the read path in read.c, the session in serve.c).
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
#include "fs/fs_impl.h"

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

/* The node behind an inode, or NULL for an inode we never handed out. */
static const d9_vnode *ino_node(const fs_state *s, fuse_ino_t ino, int *idx) {
  if (ino == 0 || ino > (fuse_ino_t)s->nnodes) return NULL;
  *idx = (int)(ino - 1);
  return d9_mount_node(s->m, *idx);
}

const d9_vnode *d9_fs_req_node(fuse_req_t req, fuse_ino_t ino, int want_dir, int *idx) {
  const d9_vnode *n = ino_node(fuse_req_userdata(req), ino, idx);
  int err = !n ? ENOENT : want_dir && n->kind != D9_NODE_DIR ? ENOTDIR : 0;
  if (err) fuse_reply_err(req, err);
  return err ? NULL : n;
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
    st->st_nlink = (nlink_t)n->nlink; /* > 1: a file rank views share (mapper/tree.c) */
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

const struct fuse_custom_io d9_fs_io = {
    .read = io_read, .writev = io_writev, .splice_send = io_splice};

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  const fs_state *s = fuse_req_userdata(req);
  int pidx, idx;
  const d9_vnode *p = d9_fs_req_node(req, parent, 1, &pidx);
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
  const d9_vnode *n = d9_fs_req_node(req, ino, 0, &idx);
  if (!n) return;
  struct stat st;
  fill_stat(s, idx, n, &st);
  fuse_reply_attr(req, &st, FS_TIMEOUT);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi) {
  int idx;
  if (!d9_fs_req_node(req, ino, 1, &idx)) return;
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
  const d9_vnode *n = d9_fs_req_node(req, ino, 1, &idx);
  if (!n) return;
  int64_t total = 2 + (int64_t)n->nchildren;
  if (off < 0 || off >= total) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  char *buf = d9_fs_rbuf_get(s, size);
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
  const d9_vnode *n = d9_fs_req_node(req, ino, 0, &idx);
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

const struct fuse_lowlevel_ops d9_fs_ops = {
    .init = fs_init,
    .lookup = fs_lookup,
    .getattr = fs_getattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = d9_fs_read,
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
