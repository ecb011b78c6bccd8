/* fs_impl.h - what the FUSE front end's files share (fuse_ll.c: the
 * operations; read.c: the read path and per-thread buffers; serve.c: the
 * session). Not a public header: fs.h is the front end's face. */
#ifndef D9_FS_IMPL_H
#define D9_FS_IMPL_H

#define FUSE_USE_VERSION 34

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "mapper/mount.h"

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

/* fuse_ll.c: the operations table and the session's I/O (io_read notes the
 * kernel's INIT flags, see fuse_init.h). */
extern const struct fuse_lowlevel_ops d9_fs_ops;
extern const struct fuse_custom_io d9_fs_io;

/* fuse_ll.c: the node behind ino for a request; on NULL the request has
 * been answered (ENOENT, or ENOTDIR when want_dir and the node is no dir). */
const d9_vnode *d9_fs_req_node(fuse_req_t req, fuse_ino_t ino, int want_dir, int *idx);

/* read.c: the read operation (reply contract there). */
void d9_fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info *fi);
/* read.c: this thread's buffer of at least n bytes, NULL when out of
 * memory; d9_fs_rbuf_free is buf_key's destructor. */
void *d9_fs_rbuf_get(const fs_state *s, size_t n);
void d9_fs_rbuf_free(void *p);

#endif
