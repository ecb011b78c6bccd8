/* piece.h - one piece of a zero-copy read reply: memory, or a range of a
 * source shard file to be moved with splice(2). Shared by the evaluator,
 * which describes a reply as pieces (d9_eval_pieces), and the mount API,
 * which hands them to the front end (d9_mount_read_pieces). */
#ifndef D9_PIECE_H
#define D9_PIECE_H

#include <stddef.h>
#include <stdint.h>

/* A reply holds at most D9_READ_MAXREFS source ranges, each between two
 * memory pieces: D9_READ_MAXPIECES pieces in all. */
enum { D9_READ_MAXREFS = 16, D9_READ_MAXPIECES = 2 * D9_READ_MAXREFS + 1 };

typedef struct d9_piece {
  const void *mem;  /* inside the reply buffer, or NULL for a source range */
  int fd;           /* source range: the shard (borrowed; open while the mount lives) */
  int shard;        /* source range: catalog shard index, for the check */
  uint64_t off;     /* source range: file offset, bytes */
  size_t len;       /* bytes */
} d9_piece;

#endif
