/* parallel.c: the persistent thread pool behind parallel TVM kernels, and the TVM backend hook they call.
 *
 * TVM's LLVM objects reach the runtime only through weak data slots holding function pointers. A kernel with a
 * parallel loop loads `__TVMBackendParallelLaunch` and calls it with a closure (flambda, cdata); the closure
 * splits the loop statically by (task_id, num_task), any num_task. The strong definition below, initialised to our
 * function, overrides the objects' weak (null) slot at link time.
 *
 * Design: num_threads - 1 workers plus the calling thread. A launch cuts the loop into TASKS_PER_THREAD tasks per
 * pool thread, publishes the job and wakes the workers; every participant, the launcher included, claims tasks one
 * at a time from a shared counter until none is left, and the launcher returns once every task has finished. Tasks
 * are claimed, not dealt: when weights stream, the loading thread is a third thread on two cores, and a worker it
 * displaces would otherwise hold up a fixed half of every kernel while the other core waited for it; now the other
 * core takes the displaced worker's remaining tasks, and the launcher never waits for a worker that has no task
 * (one asleep or descheduled simply finds nothing left when it wakes).
 *
 * The counter holds (generation << 32 | next task index) and `limit` (generation << 32 | task count): a claim whose
 * generation differs from `limit`'s, or whose index is past the count, finds no task of the job it was published for.
 * A participant holding a task of generation g keeps the launcher from publishing g + 1 (which waits for every task
 * of g), so the job it reads after a successful claim is its own. Workers spin briefly on the generation (the
 * kernels of one timestep come back to back) and then sleep on a condition variable; the launcher likewise spins,
 * then sleeps, while waiting for the last task. A launch from inside a task (nested parallelism) or without a
 * running pool runs the tasks serially on the caller.
 *
 * `__TVMBackendParallelBarrier` (tasks of one launch waiting for each other) is not provided: claimed tasks need not
 * run at the same time, and masic's schedules never ask for it, so an object referencing it fails to link. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "masic_model.h"
#include "spin.h"

typedef struct {
  void *sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;

typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv *penv, void *cdata);

#define MASIC_MAX_THREADS 256
#define MASIC_TASKS_PER_THREAD 4 /* finer cuts let a core take over a displaced worker's share; see the top */

static struct {
  int num_threads; /* P; 0 while the pool is not running */
  pthread_t threads[MASIC_MAX_THREADS];
  pthread_mutex_t mutex;
  pthread_cond_t wake; /* workers wait here for a new generation */
  pthread_cond_t done; /* the launcher waits here for the last task */
  atomic_uint generation;
  atomic_int shutdown;
  /* the current job: written before `limit` and `next` are published, read-only until `unfinished` is 0 */
  FTVMParallelLambda flambda;
  void *cdata;
  TVMParallelGroupEnv env;
  atomic_uint_fast64_t limit; /* generation << 32 | the job's task count */
  atomic_uint_fast64_t next;  /* generation << 32 | the next task to claim */
  atomic_int unfinished;      /* tasks of the current job not yet finished */
  atomic_int status;          /* first non-zero task result */
} pool;

static _Thread_local int in_task;

/* Claims and runs tasks of the current job until none is left; records the first failure. */
static void run_tasks(void) {
  for (;;) {
    uint64_t ticket = atomic_fetch_add(&pool.next, 1), limit = atomic_load(&pool.limit);
    if (ticket >> 32 != limit >> 32 || (uint32_t)ticket >= (uint32_t)limit) return;
    in_task = 1;
    int rc = pool.flambda((int)(uint32_t)ticket, &pool.env, pool.cdata);
    in_task = 0;
    if (rc != 0) {
      int zero = 0;
      atomic_compare_exchange_strong(&pool.status, &zero, rc);
    }
    if (atomic_fetch_sub(&pool.unfinished, 1) == 1) {
      pthread_mutex_lock(&pool.mutex);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.mutex);
    }
  }
}

/* Polls (spin.h), then sleeps on `cond`, until done(NULL, arg) holds. */
static void wait_until(masic_spin_done_fn done, uint32_t arg, pthread_cond_t *cond) {
  if (masic_spun_until(done, NULL, arg)) return;
  pthread_mutex_lock(&pool.mutex);
  while (!done(NULL, arg)) pthread_cond_wait(cond, &pool.mutex);
  pthread_mutex_unlock(&pool.mutex);
}

static bool new_job_or_shutdown(const void *unused, uint32_t seen) {
  (void)unused;
  return atomic_load(&pool.generation) != seen || atomic_load(&pool.shutdown);
}

static bool all_tasks_done(const void *unused, uint32_t unused_arg) {
  (void)unused;
  (void)unused_arg;
  return atomic_load(&pool.unfinished) == 0;
}

static void *worker_main(void *arg) {
  (void)arg;
  unsigned seen = 0; /* workers start before the first launch, at generation 0 */
  for (;;) {
    wait_until(new_job_or_shutdown, seen, &pool.wake);
    if (atomic_load(&pool.shutdown)) return NULL;
    seen = atomic_load(&pool.generation);
    run_tasks();
  }
}

/* TVMBackendParallelLaunch semantics: run flambda(task_id, env, cdata) for task_id in [0, num_task) and return
 * after all finished; num_task == 0 leaves the cut to the pool. Returns the first non-zero task result. */
static int masic_parallel_launch(FTVMParallelLambda flambda, void *cdata, int num_task) {
  int threads = masic_parallel_num_threads();
  if (num_task <= 0) num_task = threads * (threads > 1 ? MASIC_TASKS_PER_THREAD : 1);
  if (threads <= 1 || num_task == 1 || in_task) {
    TVMParallelGroupEnv env = {NULL, num_task};
    for (int t = 0; t < num_task; t++) {
      int rc = flambda(t, &env, cdata);
      if (rc != 0) return rc;
    }
    return 0;
  }
  pool.flambda = flambda;
  pool.cdata = cdata;
  pool.env.sync_handle = NULL;
  pool.env.num_task = num_task;
  atomic_store(&pool.status, 0);
  atomic_store(&pool.unfinished, num_task);
  uint64_t generation = (uint64_t)(atomic_load(&pool.generation) + 1u);
  atomic_store(&pool.limit, generation << 32 | (uint32_t)num_task);
  atomic_store(&pool.next, generation << 32); /* publishes the job: claims from here on find it */
  pthread_mutex_lock(&pool.mutex);
  atomic_store(&pool.generation, (unsigned)generation);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mutex);
  run_tasks();
  wait_until(all_tasks_done, 0, &pool.done);
  return atomic_load(&pool.status);
}

/* The slot the LLVM objects read (weak and null there; this strong definition wins at link time). */
int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void *, int) = masic_parallel_launch;

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
