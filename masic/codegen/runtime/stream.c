/* stream.c: the loading thread (see stream.h).
 *
 * When weights do not fit in memory, the plan gives some of them a slot in the arena that successive weights share:
 * each block of timesteps reads them again, load by load, just ahead of the kernels that need them. One loading thread
 * issues the loads of a block in order. Load k may begin once the compute has finished every position before
 * loads[k].start (the slot's previous occupant is dead then); the compute reports its progress with
 * masic_reached(p) and waits for load k with masic_wait_load(k). Blocks are fenced on both sides: a block's loads
 * begin only when it starts (at the end of the previous block its slots may still be read), and
 * masic_stream_end_block waits until the thread is idle, so between blocks the arena and the counters belong to the
 * compute alone.
 *
 * The compute's side is lock-free when nothing has to wait: `done` and `reached` are atomics, and masic_reached takes
 * the mutex only if the loading thread has said (in `wanted`) that it sleeps until that position. Both sides store
 * their own variable, then a full fence, then load the other's, so at least one of them sees the other's store:
 * either the thread finds the position already reached, or the compute finds it waiting and wakes it under the mutex
 * (which the thread holds from publishing `wanted` until it sleeps). The fences are not redundant with the
 * sequentially consistent accesses: qemu-user translates aarch64's stlr-then-ldar with no barrier between the two on
 * an x86-64 host, whose store buffer then lets each side miss the other's store, and both sleep (1 run in 1200 of
 * tests/runtime's streamed model hung so); a fence is a `dmb ish`, which qemu does translate to a full barrier.
 *
 * A load that fails (the file changed under the model, an I/O error) records its error and sets `failed`; the
 * thread serves no more loads, and a compute waiting for one returns with a status instead of waiting forever, so
 * the error reaches the caller as a return code. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include "stream.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "profile.h"
#include "spin.h"
#include "util.h"
#include "weights.h"

#define NO_POSITION UINT32_MAX
#define STREAM_STACK_BYTES ((size_t)1 << 18) /* the thread only calls pread */
#define STREAM_FAILED_STATUS (-1)            /* masic_wait_load's status when the load failed */

struct masic_stream {
  const masic_model_t *model;
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t to_loader;  /* a block started or ended, a wanted position was reached, or shutdown */
  pthread_cond_t to_compute; /* a load is done or failed, or the thread went idle */
  int fd;
  const char *path;
  uint8_t *arena;
  masic_weight_io_t *io;
  /* under mutex */
  uint64_t blocks_started;
  bool block_open; /* between masic_stream_begin_block and masic_stream_end_block */
  bool busy;       /* the thread is serving the current block */
  bool shutdown;
  masic_error_t error; /* written by the thread before it sets `failed` */
  atomic_bool failed;
  /* atomics, reset by masic_stream_begin_block while the thread is idle */
  atomic_uint done;    /* loads of the current block completed */
  atomic_uint reached; /* positions of the current block the compute has finished */
  atomic_uint wanted;  /* the position the thread sleeps until, or NO_POSITION */
};

static bool position_reached(const void *stream, uint32_t position) {
  const masic_stream_t *s = stream;
  return atomic_load(&s->reached) >= position;
}

/* In the loading thread: polls, then sleeps, until the compute has reached load k's start in the current block.
 * Returns false if the block ended first (its remaining loads are not needed) or the loader is shutting down. (It
 * does not ask the kernel to read ahead meanwhile: from the page cache POSIX_FADV_WILLNEED changed nothing.) */
static bool await_position(masic_stream_t *s, uint32_t k) {
  uint32_t position = s->model->loads[k].start;
  if (masic_spun_until(position_reached, s, position)) return true; /* spin.h: why poll first */
  pthread_mutex_lock(&s->mutex);
  atomic_store(&s->wanted, position);
  atomic_thread_fence(memory_order_seq_cst); /* see the top of the file */
  while (atomic_load(&s->reached) < position && s->block_open && !s->shutdown)
    pthread_cond_wait(&s->to_loader, &s->mutex);
  atomic_store(&s->wanted, NO_POSITION);
  bool go = atomic_load(&s->reached) >= position && s->block_open && !s->shutdown;
  pthread_mutex_unlock(&s->mutex);
  return go;
}

/* In the loading thread: reads load k into its slot, checks its CRC-32C and publishes it, or records why it cannot
 * and returns false. weights.bin passed its size check at open, so a short read means the file was changed or
 * replaced while the model ran. */
static bool read_load(masic_stream_t *s, uint32_t k) {
  const masic_load_t *load = &s->model->loads[k];
  double start = masic_profiling() ? masic_now_s() : 0.0;
  masic_error_t err;
  bool ok = true;
  if (load->kind == MASIC_LOAD_STATE_FILL) {
    float value;
    memcpy(&value, &load->fill_bits, sizeof value);
    float *slot = (float *)(void *)(s->arena + load->arena_offset); /* float-aligned: masic_model_check */
    for (uint64_t i = 0; i < load->nbytes / sizeof(float); i++) slot[i] = value;
  } else {
    uint32_t crc;
    int64_t got = masic_weights_read_piece(s->fd, s->arena + load->arena_offset, load->nbytes, load->file_offset, &crc,
                                           NULL);
    if (got < 0)
      ok = masic_fail(&err, MASIC_EXIT_SYSTEM, "cannot read %s: %s", s->path, strerror(errno));
    else if ((uint64_t)got < load->nbytes)
      ok = masic_fail(&err, MASIC_EXIT_USER,
                      "weights file %s changed while the model was running (streamed load %u is past its end); %s",
                      s->path, k, MASIC_WEIGHTS_REMEDY);
    else
      ok = masic_weights_check_crc(s->path, load->kind == MASIC_LOAD_STATE ? "streamed state" : "streamed weight",
                                   load->file_offset, load->nbytes, crc, load->crc32c, &err);
  }
  if (ok && masic_profiling()) masic_profile_load(k, masic_now_s() - start);
  pthread_mutex_lock(&s->mutex);
  if (ok) {
    if (load->kind == MASIC_LOAD_WEIGHT) s->io->streamed += load->nbytes;
    if (load->kind == MASIC_LOAD_STATE) s->io->state += load->nbytes;
    atomic_store_explicit(&s->done, k + 1, memory_order_release); /* publishes the slot's bytes */
  } else if (!atomic_load(&s->failed)) {
    s->error = err;
    atomic_store(&s->failed, true);
  }
  pthread_cond_broadcast(&s->to_compute);
  pthread_mutex_unlock(&s->mutex);
  return ok;
}

static void *stream_main(void *arg) {
  masic_stream_t *s = arg;
  uint64_t served = 0;
  pthread_mutex_lock(&s->mutex);
  for (;;) {
    while (!s->shutdown && s->blocks_started == served) pthread_cond_wait(&s->to_loader, &s->mutex);
    if (s->shutdown) break;
    served = s->blocks_started;
    pthread_mutex_unlock(&s->mutex);
    for (uint32_t k = 0; k < s->model->n_loads && !atomic_load(&s->failed) &&
                         await_position(s, k) && read_load(s, k);
         k++) {
    }
    pthread_mutex_lock(&s->mutex);
    s->busy = false;
    pthread_cond_broadcast(&s->to_compute);
  }
  pthread_mutex_unlock(&s->mutex);
  return NULL;
}

bool masic_stream_start(masic_stream_t **out, const masic_model_t *m, int fd, const char *path, uint8_t *arena,
                        masic_weight_io_t *io, masic_error_t *err) {
  *out = NULL;
  if (m->n_loads == 0) return true;
  masic_stream_t *s = calloc(1, sizeof *s);
  if (!s) return masic_fail(err, MASIC_EXIT_SYSTEM, "out of memory starting the thread that streams weights");
  s->model = m;
  s->fd = fd;
  s->path = path;
  s->arena = arena;
  s->io = io;
  atomic_store(&s->wanted, NO_POSITION);
  pthread_attr_t attr;
  size_t stack = STREAM_STACK_BYTES > PTHREAD_STACK_MIN ? STREAM_STACK_BYTES : (size_t)PTHREAD_STACK_MIN;
  bool started = false;
  if (!pthread_mutex_init(&s->mutex, NULL)) {
    if (!pthread_cond_init(&s->to_loader, NULL)) {
      if (!pthread_cond_init(&s->to_compute, NULL)) {
        if (!pthread_attr_init(&attr)) {
          started = !pthread_attr_setstacksize(&attr, stack) && !pthread_create(&s->thread, &attr, stream_main, s);
          pthread_attr_destroy(&attr);
        }
        if (!started) pthread_cond_destroy(&s->to_compute);
      }
      if (!started) pthread_cond_destroy(&s->to_loader);
    }
    if (!started) pthread_mutex_destroy(&s->mutex);
  }
  if (!started) {
    free(s);
    return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot start the thread that streams weights");
  }
  *out = s;
  return true;
}

void masic_stream_stop(masic_stream_t *s) {
  if (!s) return;
  pthread_mutex_lock(&s->mutex);
  s->shutdown = true;
  pthread_cond_signal(&s->to_loader);
  pthread_mutex_unlock(&s->mutex);
  pthread_join(s->thread, NULL);
  pthread_cond_destroy(&s->to_compute);
  pthread_cond_destroy(&s->to_loader);
  pthread_mutex_destroy(&s->mutex);
  free(s);
}

void masic_stream_begin_block(masic_stream_t *s) {
  if (!s) return;
  pthread_mutex_lock(&s->mutex);
  atomic_store(&s->done, 0);
  atomic_store(&s->reached, 0);
  s->blocks_started++;
  s->block_open = true;
  s->busy = true;
  pthread_cond_signal(&s->to_loader);
  pthread_mutex_unlock(&s->mutex);
}

void masic_stream_end_block(masic_stream_t *s) {
  if (!s) return;
  pthread_mutex_lock(&s->mutex);
  s->block_open = false;
  pthread_cond_signal(&s->to_loader);
  while (s->busy) pthread_cond_wait(&s->to_compute, &s->mutex);
  pthread_mutex_unlock(&s->mutex);
}

bool masic_stream_failed(const masic_stream_t *s, masic_error_t *err) {
  if (!s || !atomic_load(&s->failed)) return false;
  *err = s->error; /* written before `failed` was set, and never again */
  return true;
}

void masic_reached(masic_stream_t *s, uint32_t position) {
  if (!s) return;
  atomic_store(&s->reached, position);
  atomic_thread_fence(memory_order_seq_cst); /* see the top of the file */
  if (position >= atomic_load(&s->wanted)) {
    pthread_mutex_lock(&s->mutex);
    pthread_cond_signal(&s->to_loader);
    pthread_mutex_unlock(&s->mutex);
  }
}

/* True once load k is done or the stream has failed. */
static bool load_settled(const void *stream, uint32_t k) {
  const masic_stream_t *s = stream;
  return atomic_load_explicit(&s->done, memory_order_acquire) > k || atomic_load(&s->failed);
}

int masic_wait_load(masic_stream_t *s, uint32_t k) {
  if (!s || atomic_load_explicit(&s->done, memory_order_acquire) > k) return 0;
  /* Waiting for a load that cannot begin before a position the compute has not reached would hang forever. */
  uint32_t reached = atomic_load(&s->reached);
  if (k >= s->model->n_loads || s->model->loads[k].start > reached) {
    pthread_mutex_lock(&s->mutex);
    if (!atomic_load(&s->failed)) {
      masic_fail(&s->error, MASIC_EXIT_SYSTEM, "inconsistent build: the model waits for streamed load %u at position "
                 "%u, before it may begin; recompile the model", k, reached);
      atomic_store(&s->failed, true);
    }
    pthread_mutex_unlock(&s->mutex);
    return STREAM_FAILED_STATUS;
  }
  double start = masic_now_s();
  if (!masic_spun_until(load_settled, s, k)) {
    pthread_mutex_lock(&s->mutex);
    while (!load_settled(s, k)) pthread_cond_wait(&s->to_compute, &s->mutex);
    pthread_mutex_unlock(&s->mutex);
  }
  double waited = masic_now_s() - start;
  s->io->load_wait_s += waited;
  masic_profile_wait(k, waited);
  return atomic_load_explicit(&s->done, memory_order_acquire) > k ? 0 : STREAM_FAILED_STATUS;
}
