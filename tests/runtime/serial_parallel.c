/* serial_parallel.c: a single-threaded stand-in for runtime/parallel.c, for loader tests that need no pool. */
#include "masic_model.h"

static int num_threads;

int masic_parallel_init(int requested) {
  num_threads = requested > 0 ? requested : 1;
  return 0;
}

int masic_parallel_num_threads(void) { return num_threads; }

void masic_parallel_shutdown(void) { num_threads = 0; }
