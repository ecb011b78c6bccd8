/* pipe.h - splice pipes for zero-copy replies, without FUSE types: how
 * many pipe slots a read's pieces take, filling a pipe from them, and the
 * largest pipe this process may have. */
#ifndef D9_PIPE_H
#define D9_PIPE_H

#include <stddef.h>

#include "mapper/mount.h"

/* Pipe slots (pages) that pieces p[0..np) take: a source range one per
 * page it spans, memory one per page plus one for a partly filled first
 * page. */
size_t d9_pipe_slots(const d9_piece *p, int np);

/* Move the pieces into the (empty) pipe wfd (O_NONBLOCK): source ranges
 * with splice, memory with write. Returns 0, -EIO when a shard ends early
 * (it shrank under the mount) or fails to read, or -EAGAIN when splicing
 * cannot do it (the pipe is full, the source's filesystem does not splice):
 * answer by copy then. */
int d9_pipe_fill(int wfd, const d9_piece *p, int np);

/* Bytes still in the pipe's read end rfd (1 when it cannot tell). */
int d9_pipe_pending(int rfd);

/* The largest pipe an unprivileged process may have (bytes, a power of two
 * pages; fs.pipe-max-size), capped at cap; 0 if unknown. */
size_t d9_pipe_max_size(size_t cap);

#endif
