/* spin.h: the poll a thread runs before it sleeps on a condition variable, shared by the thread pool (parallel.c)
 * and the loading thread's hand-overs (stream.c). Header-only, since parallel.c also links without the rest of the
 * loader (the kernel tests, the benchmarks' harnesses).
 *
 * Why poll: on the 2-core VM a sleeper's wake-up took some 40 us, longer than many kernels. The pool's workers and
 * launcher poll (the kernels of one timestep come back to back); the loading thread and the compute poll on each
 * other's positions (ConvNet4 under 400KB streams 51 pieces of a few KB per inference: with the loader sleeping at
 * once its kernels waited 135 ms over 64 samples under --profile, polling first 7 to 9 ms, and vgg16 under 64MB ran
 * 5 to 7% faster). Why yield: a poller must not hold a core another thread needs, the loading thread when weights
 * stream (a third thread on 2 cores) or the launcher's serial kernels (vgg11 under 32 MB 67 -> 44 ms per inference,
 * ConvNet4 3.4 -> 2.2 ms; yielding every 64 turns instead, 46 and 2.4 ms). */
#ifndef MASIC_SPIN_H
#define MASIC_SPIN_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

#define MASIC_SPIN_ITERS 20000 /* polls before a sleep: some tens of microseconds */
#define MASIC_SPIN_YIELD 256   /* polls between two sched_yield calls */

typedef bool (*masic_spin_done_fn)(const void *ctx, uint32_t arg);

/* Polls done(ctx, arg) up to MASIC_SPIN_ITERS times, yielding the core every MASIC_SPIN_YIELD turns; true if it came
 * to hold (the caller sleeps otherwise). */
static inline bool masic_spun_until(masic_spin_done_fn done, const void *ctx, uint32_t arg) {
  for (int i = 0; i < MASIC_SPIN_ITERS; i++) {
    if (done(ctx, arg)) return true;
    if (i % MASIC_SPIN_YIELD == MASIC_SPIN_YIELD - 1) sched_yield();
  }
  return done(ctx, arg);
}

#endif
