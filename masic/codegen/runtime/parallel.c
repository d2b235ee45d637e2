/* parallel.c: the persistent thread pool behind parallel TVM kernels, and the TVM backend hooks they call.
 *
 * TVM's LLVM objects reach the runtime only through weak data slots holding function pointers. A kernel with a
 * parallel loop loads `__TVMBackendParallelLaunch` and calls it with a closure (flambda, cdata); the closure
 * splits the loop statically by (task_id, num_task). The strong definitions below, initialised to our functions,
 * override the objects' weak (null) slots at link time. `__TVMBackendParallelBarrier` is referenced only by
 * kernels that synchronise inside a parallel region; it is defined so such kernels link too.
 *
 * Design: num_threads - 1 workers plus the calling thread, each with a fixed index k that runs tasks k, k + P,
 * k + 2P, ... (P = pool size). A launch publishes the job, bumps a generation counter under the mutex and wakes
 * the workers; every worker takes part in every launch and the launcher waits until all of them have checked
 * in, so the job is never changed under a late worker. Workers spin briefly on the generation (the kernels of
 * one timestep come back to back) and then sleep on a condition variable; the launcher likewise spins, then
 * sleeps, while waiting for the last worker. A launch from inside a task (nested parallelism) or without a
 * running pool runs the tasks serially on the caller. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "masic_model.h"

typedef struct {
  void *sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;

typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv *penv, void *cdata);

#define MASIC_MAX_THREADS 256
#define MASIC_SPIN_ITERS 20000
#define MASIC_SPIN_YIELD 256 /* spins between two sched_yield calls */

/* Sense-reversing barrier for __TVMBackendParallelBarrier. */
typedef struct {
  atomic_int arrived;
  atomic_int sense;
} masic_barrier_t;

static struct {
  int num_threads; /* P; 0 while the pool is not running */
  pthread_t threads[MASIC_MAX_THREADS];
  pthread_mutex_t mutex;
  pthread_cond_t wake; /* workers wait here for a new generation */
  pthread_cond_t done; /* the launcher waits here for the last worker */
  atomic_uint generation;
  atomic_int shutdown;
  /* the current job: written before generation is bumped, read-only until `remaining` is 0 */
  FTVMParallelLambda flambda;
  void *cdata;
  TVMParallelGroupEnv env;
  atomic_int remaining; /* workers that have not finished their share of the current job */
  atomic_int status;    /* first non-zero task result */
  masic_barrier_t barrier;
} pool;

static _Thread_local int in_task;

/* Runs the tasks of worker `index` for the current job and records the first failure. */
static void run_share(int index) {
  in_task = 1;
  for (int t = index; t < pool.env.num_task; t += pool.num_threads) {
    int rc = pool.flambda(t, &pool.env, pool.cdata);
    if (rc != 0) {
      int zero = 0;
      atomic_compare_exchange_strong(&pool.status, &zero, rc);
    }
  }
  in_task = 0;
}

/* Spins up to MASIC_SPIN_ITERS times, then sleeps on `cond`, until done(arg) holds. The spin yields the core every
 * MASIC_SPIN_YIELD turns, so that a spinning worker does not hold a core another thread needs: the loading thread
 * when weights stream (a third thread on 2 cores), or the launcher's serial kernels. On the 2-core VM: vgg11 under
 * 32 MB 67 -> 44 ms per inference, ConvNet4 3.4 -> 2.2 ms (yielding every 64 turns: 46 and 2.4 ms). */
static void wait_until(int (*done)(unsigned), unsigned arg, pthread_cond_t *cond) {
  for (int i = 0; i < MASIC_SPIN_ITERS && !done(arg); i++) {
    if (i % MASIC_SPIN_YIELD == MASIC_SPIN_YIELD - 1) sched_yield();
  }
  if (done(arg)) return;
  pthread_mutex_lock(&pool.mutex);
  while (!done(arg)) pthread_cond_wait(cond, &pool.mutex);
  pthread_mutex_unlock(&pool.mutex);
}

static int new_job_or_shutdown(unsigned seen) {
  return atomic_load(&pool.generation) != seen || atomic_load(&pool.shutdown);
}

static int all_workers_done(unsigned unused) {
  (void)unused;
  return atomic_load(&pool.remaining) == 0;
}

static void *worker_main(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned seen = 0; /* workers start before the first launch, at generation 0 */
  for (;;) {
    wait_until(new_job_or_shutdown, seen, &pool.wake);
    if (atomic_load(&pool.shutdown)) return NULL;
    seen = atomic_load(&pool.generation);
    run_share(index);
    if (atomic_fetch_sub(&pool.remaining, 1) == 1) {
      pthread_mutex_lock(&pool.mutex);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.mutex);
    }
  }
}

/* TVMBackendParallelLaunch semantics: run flambda(task_id, env, cdata) for task_id in [0, num_task) and return
 * after all finished; num_task == 0 means one task per pool thread. Returns the first non-zero task result. */
static int masic_parallel_launch(FTVMParallelLambda flambda, void *cdata, int num_task) {
  if (num_task <= 0) num_task = masic_parallel_num_threads();
  if (pool.num_threads <= 1 || num_task == 1 || in_task) {
    TVMParallelGroupEnv env = {NULL, num_task};
    for (int t = 0; t < num_task; t++) {
      int rc = flambda(t, &env, cdata);
      if (rc != 0) return rc;
    }
    return 0;
  }
  pool.flambda = flambda;
  pool.cdata = cdata;
  pool.env.sync_handle = &pool.barrier;
  pool.env.num_task = num_task;
  atomic_store(&pool.status, 0);
  atomic_store(&pool.remaining, pool.num_threads - 1);
  pthread_mutex_lock(&pool.mutex);
  atomic_fetch_add(&pool.generation, 1);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mutex);
  run_share(0);
  wait_until(all_workers_done, 0, &pool.done);
  return atomic_load(&pool.status);
}

/* TVMBackendParallelBarrier semantics: the num_task tasks of the current launch wait for each other. Valid when
 * the tasks run concurrently (num_task <= pool size, which TVM's num_task == 0 launches guarantee). */
static int masic_parallel_barrier(int task_id, TVMParallelGroupEnv *penv) {
  (void)task_id;
  masic_barrier_t *b = penv->sync_handle;
  if (penv->num_task <= 1 || b == NULL) return 0;
  int my_sense = !atomic_load(&b->sense);
  if (atomic_fetch_add(&b->arrived, 1) == penv->num_task - 1) {
    atomic_store(&b->arrived, 0);
    atomic_store(&b->sense, my_sense);
  } else {
    while (atomic_load(&b->sense) != my_sense) {
    }
  }
  return 0;
}

/* The slots the LLVM objects read (weak and null there; these strong definitions win at link time). */
int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void *, int) = masic_parallel_launch;
int (*__TVMBackendParallelBarrier)(int, TVMParallelGroupEnv *) = masic_parallel_barrier;

int masic_parallel_init(int num_threads) {
  if (pool.num_threads > 0) return 0;
  if (num_threads <= 0) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    num_threads = online > 0 ? (int)online : 1;
  }
  if (num_threads > MASIC_MAX_THREADS) num_threads = MASIC_MAX_THREADS;
  if (pthread_mutex_init(&pool.mutex, NULL) != 0) return -1;
  if (pthread_cond_init(&pool.wake, NULL) != 0 || pthread_cond_init(&pool.done, NULL) != 0) return -1;
  atomic_store(&pool.shutdown, 0);
  atomic_store(&pool.generation, 0);
  pool.num_threads = num_threads;
  for (int i = 1; i < num_threads; i++) {
    if (pthread_create(&pool.threads[i], NULL, worker_main, (void *)(intptr_t)i) != 0) {
      pool.num_threads = i; /* join the workers started so far */
      masic_parallel_shutdown();
      return -1;
    }
  }
  return 0;
}

int masic_parallel_num_threads(void) { return pool.num_threads > 0 ? pool.num_threads : 1; }

void masic_parallel_shutdown(void) {
  if (pool.num_threads <= 0) return;
  pthread_mutex_lock(&pool.mutex);
  atomic_store(&pool.shutdown, 1);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mutex);
  for (int i = 1; i < pool.num_threads; i++) pthread_join(pool.threads[i], NULL);
  pthread_cond_destroy(&pool.done);
  pthread_cond_destroy(&pool.wake);
  pthread_mutex_destroy(&pool.mutex);
  pool.num_threads = 0;
}
