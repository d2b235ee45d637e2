/* stream.h: the loading thread, which reads streamed weights and transient neuron state from weights.bin into their
 * arena slots just ahead of the kernels that need them (masic_load_t in masic_model.h). */
#ifndef MASIC_STREAM_H
#define MASIC_STREAM_H
#include <stdint.h>

#include "masic_model.h"

/* Starts the thread if the model has loads; without loads there is no thread and every hook returns at once. The
 * model must have passed masic_model_check; fd stays open until masic_stream_stop. */
void masic_stream_start(const masic_model_t *m, int fd, const char *path, uint8_t *arena);
void masic_stream_stop(void);

/* Lets the thread issue the loads of a new block (it is idle here). */
void masic_stream_begin_block(void);
/* Ends the block and waits until the thread is idle, having finished or dropped the block's loads. */
void masic_stream_end_block(void);

/* masic_wait_load and masic_reached, the hooks the generated code calls, are declared in masic_model.h. */

#endif
