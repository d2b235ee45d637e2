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
 * their own variable then load the other's, in sequentially consistent order, so at least one of them sees the
 * other's store: either the thread finds the position already reached, or the compute finds it waiting and wakes it
 * under the mutex (which the thread holds from publishing `wanted` until it sleeps). */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include "stream.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "profile.h"
#include "util.h"
#include "weights.h"

#define NO_POSITION UINT32_MAX
#define STREAM_SPIN_ITERS 2000               /* a load finishing within a microsecond or so is not worth a sleep */
#define STREAM_STACK_BYTES ((size_t)1 << 18) /* the thread only calls pread and, on failure, masic_die */

static struct {
  bool active; /* the model has loads and the thread runs; everything below is unused otherwise */
  const masic_model_t *model;
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t to_loader;  /* a block started or ended, a wanted position was reached, or shutdown */
  pthread_cond_t to_compute; /* a load is done, or the thread went idle */
  int fd;
  const char *path;
  uint8_t *arena;
  /* under mutex */
  uint64_t blocks_started;
  bool block_open; /* between masic_stream_begin_block and masic_stream_end_block */
  bool busy;       /* the thread is serving the current block */
  bool shutdown;
  /* atomics, reset by masic_stream_begin_block while the thread is idle */
  atomic_uint done;    /* loads of the current block completed */
  atomic_uint reached; /* positions of the current block the compute has finished */
  atomic_uint wanted;  /* the position the thread sleeps until, or NO_POSITION */
} stream;

/* In the loading thread: sleeps until the compute has reached `position` in the current block. Returns false if the
 * block ended first (its remaining loads are not needed) or the loader is shutting down. */
static bool await_position(uint32_t position) {
  if (atomic_load(&stream.reached) >= position) return true;
  pthread_mutex_lock(&stream.mutex);
  atomic_store(&stream.wanted, position);
  while (atomic_load(&stream.reached) < position && stream.block_open && !stream.shutdown)
    pthread_cond_wait(&stream.to_loader, &stream.mutex);
  atomic_store(&stream.wanted, NO_POSITION);
  bool go = atomic_load(&stream.reached) >= position && stream.block_open && !stream.shutdown;
  pthread_mutex_unlock(&stream.mutex);
  return go;
}

/* In the loading thread: reads load k into its slot, checks its CRC-32C and publishes it. weights.bin passed its size
 * check at start, so a short read means the file was changed or replaced while the model ran. */
static void read_load(uint32_t k) {
  const masic_load_t *load = &stream.model->loads[k];
  double start = masic_profiling() ? masic_now_s() : 0.0;
  if (load->kind == MASIC_LOAD_STATE_FILL) {
    float value;
    memcpy(&value, &load->fill_bits, sizeof value);
    float *slot = (float *)(void *)(stream.arena + load->arena_offset); /* float-aligned: masic_model_check */
    for (uint64_t i = 0; i < load->nbytes / sizeof(float); i++) slot[i] = value;
  } else {
    int64_t got = masic_pread_full(stream.fd, stream.arena + load->arena_offset, (size_t)load->nbytes,
                                   load->file_offset);
    if (got < 0) masic_die(MASIC_EXIT_SYSTEM, "cannot read %s: %s", stream.path, strerror(errno));
    if ((uint64_t)got < load->nbytes)
      masic_die(MASIC_EXIT_USER, "weights file %s changed while the model was running (streamed load %u is past its "
                "end); %s", stream.path, k, MASIC_WEIGHTS_REMEDY);
    masic_error_t err;
    if (!masic_weights_check_piece(stream.path, load->kind == MASIC_LOAD_STATE ? "streamed state" : "streamed weight",
                                   load->file_offset, stream.arena + load->arena_offset, load->nbytes, load->crc32c,
                                   &err))
      masic_die_with(&err);
  }
  if (masic_profiling()) masic_profile_load(k, masic_now_s() - start);
  pthread_mutex_lock(&stream.mutex);
  if (load->kind == MASIC_LOAD_WEIGHT) masic_weight_io.streamed += load->nbytes;
  if (load->kind == MASIC_LOAD_STATE) masic_weight_io.state += load->nbytes;
  atomic_store_explicit(&stream.done, k + 1, memory_order_release); /* publishes the slot's bytes */
  pthread_cond_broadcast(&stream.to_compute);
  pthread_mutex_unlock(&stream.mutex);
}

static void *stream_main(void *unused) {
  (void)unused;
  uint64_t served = 0;
  pthread_mutex_lock(&stream.mutex);
  for (;;) {
    while (!stream.shutdown && stream.blocks_started == served) pthread_cond_wait(&stream.to_loader, &stream.mutex);
    if (stream.shutdown) break;
    served = stream.blocks_started;
    pthread_mutex_unlock(&stream.mutex);
    for (uint32_t k = 0; k < stream.model->n_loads && await_position(stream.model->loads[k].start); k++) read_load(k);
    pthread_mutex_lock(&stream.mutex);
    stream.busy = false;
    pthread_cond_broadcast(&stream.to_compute);
  }
  pthread_mutex_unlock(&stream.mutex);
  return NULL;
}

void masic_stream_start(const masic_model_t *m, int fd, const char *path, uint8_t *arena) {
  if (m->n_loads == 0) return;
  stream.model = m;
  stream.fd = fd;
  stream.path = path;
  stream.arena = arena;
  atomic_store(&stream.wanted, NO_POSITION);
  pthread_attr_t attr;
  size_t stack = STREAM_STACK_BYTES > PTHREAD_STACK_MIN ? STREAM_STACK_BYTES : (size_t)PTHREAD_STACK_MIN;
  if (pthread_mutex_init(&stream.mutex, NULL) || pthread_cond_init(&stream.to_loader, NULL) ||
      pthread_cond_init(&stream.to_compute, NULL) || pthread_attr_init(&attr) ||
      pthread_attr_setstacksize(&attr, stack) || pthread_create(&stream.thread, &attr, stream_main, NULL))
    masic_die(MASIC_EXIT_SYSTEM, "cannot start the thread that streams weights");
  pthread_attr_destroy(&attr);
  stream.active = true;
}

void masic_stream_stop(void) {
  if (!stream.active) return;
  pthread_mutex_lock(&stream.mutex);
  stream.shutdown = true;
  pthread_cond_signal(&stream.to_loader);
  pthread_mutex_unlock(&stream.mutex);
  pthread_join(stream.thread, NULL);
  pthread_cond_destroy(&stream.to_compute);
  pthread_cond_destroy(&stream.to_loader);
  pthread_mutex_destroy(&stream.mutex);
  stream.active = false;
}

void masic_stream_begin_block(void) {
  if (!stream.active) return;
  pthread_mutex_lock(&stream.mutex);
  atomic_store(&stream.done, 0);
  atomic_store(&stream.reached, 0);
  stream.blocks_started++;
  stream.block_open = true;
  stream.busy = true;
  pthread_cond_signal(&stream.to_loader);
  pthread_mutex_unlock(&stream.mutex);
}

void masic_stream_end_block(void) {
  if (!stream.active) return;
  pthread_mutex_lock(&stream.mutex);
  stream.block_open = false;
  pthread_cond_signal(&stream.to_loader);
  while (stream.busy) pthread_cond_wait(&stream.to_compute, &stream.mutex);
  pthread_mutex_unlock(&stream.mutex);
}

void masic_reached(uint32_t position) {
  if (!stream.active) return;
  atomic_store(&stream.reached, position);
  if (position >= atomic_load(&stream.wanted)) {
    pthread_mutex_lock(&stream.mutex);
    pthread_cond_signal(&stream.to_loader);
    pthread_mutex_unlock(&stream.mutex);
  }
}

void masic_wait_load(uint32_t k) {
  if (!stream.active || atomic_load_explicit(&stream.done, memory_order_acquire) > k) return;
  /* Waiting for a load that cannot begin before a position the compute has not reached would hang forever. */
  uint32_t reached = atomic_load(&stream.reached);
  if (k >= stream.model->n_loads || stream.model->loads[k].start > reached)
    masic_die(MASIC_EXIT_SYSTEM, "inconsistent build: the model waits for streamed load %u at position %u, before it "
              "may begin; recompile the model", k, reached);
  double start = masic_now_s();
  for (int i = 0; i < STREAM_SPIN_ITERS && atomic_load_explicit(&stream.done, memory_order_acquire) <= k; i++) {
  }
  if (atomic_load_explicit(&stream.done, memory_order_acquire) <= k) {
    pthread_mutex_lock(&stream.mutex);
    while (atomic_load_explicit(&stream.done, memory_order_acquire) <= k)
      pthread_cond_wait(&stream.to_compute, &stream.mutex);
    pthread_mutex_unlock(&stream.mutex);
  }
  double waited = masic_now_s() - start;
  masic_weight_io.load_wait_s += waited;
  masic_profile_wait(k, waited);
}
