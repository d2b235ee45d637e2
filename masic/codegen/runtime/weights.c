/* weights.c: see weights.h. */
#include "weights.h"

#include <errno.h>
#include <string.h>

#include "crc32c.h"

bool masic_weights_check_size(const char *path, uint64_t size, uint64_t expected_size, masic_error_t *err) {
  if (size < expected_size)
    return masic_fail(err, MASIC_EXIT_USER, "weights file %s is truncated (%llu of %llu bytes); %s", path,
                      (unsigned long long)size, (unsigned long long)expected_size, MASIC_WEIGHTS_REMEDY);
  if (size > expected_size)
    return masic_fail(err, MASIC_EXIT_USER,
                      "weights file %s is too large (%llu bytes, expected %llu); it belongs to another build, %s", path,
                      (unsigned long long)size, (unsigned long long)expected_size, MASIC_WEIGHTS_REMEDY);
  return true;
}

static bool piece_mismatch(const char *path, const char *what, uint64_t file_offset, uint64_t n, uint32_t crc,
                           uint32_t expected_crc, masic_error_t *err) {
  return masic_fail(err, MASIC_EXIT_USER,
                    "weights file %s is corrupted (%s at bytes %llu..%llu: CRC-32C %08x, expected %08x); %s", path,
                    what, (unsigned long long)file_offset, (unsigned long long)(file_offset + n), (unsigned)crc,
                    (unsigned)expected_crc, MASIC_WEIGHTS_REMEDY);
}

bool masic_weights_check_crc(const char *path, const char *what, uint64_t file_offset, uint64_t n, uint32_t crc,
                             uint32_t expected_crc, masic_error_t *err) {
  return crc == expected_crc || piece_mismatch(path, what, file_offset, n, crc, expected_crc, err);
}

int64_t masic_weights_read_piece(int fd, uint8_t *dest, uint64_t n, uint64_t offset, uint32_t *crc,
                                 masic_read_times_t *times) {
  *crc = 0;
  for (uint64_t done = 0; done < n;) {
    size_t want = n - done < MASIC_READ_CHUNK_BYTES ? (size_t)(n - done) : MASIC_READ_CHUNK_BYTES;
    double start = times ? masic_now_s() : 0.0;
    int64_t got = masic_pread_full(fd, dest + done, want, offset + done);
    if (got < 0) return -1;
    double read = times ? masic_now_s() : 0.0;
    *crc = masic_crc32c(*crc, dest + done, (size_t)got);
    if (times) {
      times->read_s += read - start;
      times->check_s += masic_now_s() - read;
    }
    done += (uint64_t)got;
    if ((size_t)got < want) return (int64_t)done;
  }
  return (int64_t)n;
}

/* Reads n bytes at offset into buf; a short read means the file shrank after its size was checked. */
static bool read_exactly(int fd, const char *path, uint8_t *buf, size_t n, uint64_t offset, masic_error_t *err) {
  int64_t got = masic_pread_full(fd, buf, n, offset);
  if (got < 0) return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot read %s: %s", path, strerror(errno));
  if ((size_t)got < n)
    return masic_fail(err, MASIC_EXIT_USER, "weights file %s shrank while being read; %s", path, MASIC_WEIGHTS_REMEDY);
  return true;
}

bool masic_weights_load(int fd, const char *path, const char *what, uint8_t *arena, const masic_segment_t *segs,
                        uint32_t n, masic_weight_io_t *io, uint64_t *bytes, masic_error_t *err) {
  for (uint32_t i = 0; i < n; i++) {
    const masic_segment_t *seg = &segs[i];
    uint32_t crc;
    masic_read_times_t times = {0};
    int64_t got = masic_weights_read_piece(fd, arena + seg->arena_offset, seg->nbytes, seg->file_offset, &crc, &times);
    if (got < 0) return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot read %s: %s", path, strerror(errno));
    if ((uint64_t)got < seg->nbytes)
      return masic_fail(err, MASIC_EXIT_USER, "weights file %s shrank while being read; %s", path,
                        MASIC_WEIGHTS_REMEDY);
    if (!masic_weights_check_crc(path, what, seg->file_offset, seg->nbytes, crc, seg->crc32c, err)) return false;
    io->read_s += times.read_s;
    io->check_s += times.check_s;
    *bytes += seg->nbytes;
  }
  return true;
}

/* One piece read through buf in chunks and checked. */
static bool verify_piece(int fd, const char *path, const char *what, uint64_t file_offset, uint64_t n,
                         uint32_t expected_crc, uint8_t *buf, size_t cap, uint64_t *checked, masic_error_t *err) {
  uint32_t crc = 0;
  for (uint64_t done = 0; done < n;) {
    size_t want = n - done < cap ? (size_t)(n - done) : cap;
    if (!read_exactly(fd, path, buf, want, file_offset + done, err)) return false;
    crc = masic_crc32c(crc, buf, want);
    done += want;
  }
  *checked += n;
  return crc == expected_crc || piece_mismatch(path, what, file_offset, n, crc, expected_crc, err);
}

bool masic_weights_verify(int fd, const char *path, uint64_t size, const masic_model_t *m, uint8_t *buf, size_t cap,
                          uint64_t *checked, masic_error_t *err) {
  if (!masic_weights_check_size(path, size, m->weights_bytes, err)) return false;
  if (!cap) return masic_fail(err, MASIC_EXIT_SYSTEM, "no buffer to check weights file %s", path);
  struct {
    const char *what;
    const masic_segment_t *segs;
    uint32_t n;
  } groups[] = {{"resident weight", m->resident, m->n_resident}, {"initial state", m->state_init, m->n_state_init}};
  for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
    for (uint32_t i = 0; i < groups[g].n; i++) {
      const masic_segment_t *s = &groups[g].segs[i];
      if (!verify_piece(fd, path, groups[g].what, s->file_offset, s->nbytes, s->crc32c, buf, cap, checked, err))
        return false;
    }
  for (uint32_t k = 0; k < m->n_loads; k++) {
    const masic_load_t *load = &m->loads[k];
    if (load->kind != MASIC_LOAD_STATE_FILL &&
        !verify_piece(fd, path, load->kind == MASIC_LOAD_STATE ? "streamed state" : "streamed weight", load->file_offset, load->nbytes, load->crc32c, buf, cap, checked,
                      err))
      return false;
  }
  return true;
}
