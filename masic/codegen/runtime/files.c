/* files.c: see files.h. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Back to blocking reads and writes once the file is known to be what it should be. */
static void clear_nonblock(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

bool masic_open_regular(const char *path, const char *what, const char *remedy, int *fd, uint64_t *size,
                        masic_file_id_t *id, masic_error_t *err) {
  /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. */
  int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (f < 0 && errno == ENOENT) return masic_fail(err, MASIC_EXIT_USER, "%s %s does not exist; %s", what, path, remedy);
  if (f < 0) return masic_fail(err, MASIC_EXIT_USER, "cannot open %s %s: %s; %s", what, path, strerror(errno), remedy);
  struct stat st;
  if (fstat(f, &st) != 0) {
    int e = errno;
    close(f);
    return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot stat %s %s: %s", what, path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(f);
    return masic_fail(err, MASIC_EXIT_USER, "%s %s is not a regular file; %s", what, path, remedy);
  }
  clear_nonblock(f);
  *fd = f;
  *size = (uint64_t)st.st_size;
  *id = (masic_file_id_t){.known = true, .dev = st.st_dev, .ino = st.st_ino};
  return true;
}

bool masic_open_output(const char *option, const char *path, const masic_named_file_t *others, size_t n, FILE **out,
                       masic_file_id_t *id, masic_error_t *err) {
  /* Not O_TRUNC: the file is compared with the inputs first. O_NONBLOCK: a FIFO without a reader fails at once
   * (ENXIO) instead of waiting forever. */
  int f = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0666);
  if (f < 0)
    return masic_fail(err, MASIC_EXIT_USER, "cannot create output file %s: %s; pass a writable %s path", path,
                      strerror(errno), option);
  struct stat st;
  if (fstat(f, &st) != 0) {
    int e = errno;
    close(f);
    return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot stat output file %s: %s", path, strerror(e));
  }
  *id = (masic_file_id_t){.known = S_ISREG(st.st_mode), .dev = st.st_dev, .ino = st.st_ino};
  for (size_t i = 0; id->known && i < n; i++) {
    if (others[i].id.known && others[i].id.dev == st.st_dev && others[i].id.ino == st.st_ino) {
      close(f);
      return masic_fail(err, MASIC_EXIT_USER, "%s %s is the same file as %s %s; writing it would destroy it, pass "
                        "another %s path", option, path, others[i].what, others[i].path, option);
    }
  }
  if (S_ISREG(st.st_mode) && ftruncate(f, 0) != 0) {
    int e = errno;
    close(f);
    return masic_fail(err, MASIC_EXIT_USER, "cannot truncate output file %s: %s", path, strerror(e));
  }
  clear_nonblock(f);
  *out = fdopen(f, "wb");
  if (!*out) {
    int e = errno;
    close(f);
    return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot write output file %s: %s", path, strerror(e));
  }
  return true;
}
