/* stream.h: the loading thread, which reads streamed weights and transient neuron state from weights.bin into their
 * arena slots just ahead of the kernels that need them (masic_load_t in masic_model.h). Each open model has its own
 * (masic_stream_t), so nothing here is global. */
#ifndef MASIC_STREAM_H
#define MASIC_STREAM_H
#include <stdbool.h>
#include <stdint.h>

#include "masic_model.h"
#include "util.h"
#include "weights.h"

/* Starts the thread if the model has loads, setting *out; without loads *out is NULL, there is no thread and every
 * hook returns at once. The model must have passed masic_model_check; fd, path, arena and io must stay valid until
 * masic_stream_stop. The thread adds the bytes it reads and the compute's waits to *io. False with *err if the
 * thread cannot be started. */
bool masic_stream_start(masic_stream_t **out, const masic_model_t *m, int fd, const char *path, uint8_t *arena,
                        masic_weight_io_t *io, masic_error_t *err);
/* Stops the thread and frees the stream; NULL is a no-op. */
void masic_stream_stop(masic_stream_t *stream);

/* Lets the thread issue the loads of a new block (it is idle here). */
void masic_stream_begin_block(masic_stream_t *stream);
/* Ends the block and waits until the thread is idle, having finished or dropped the block's loads. */
void masic_stream_end_block(masic_stream_t *stream);

/* Why a load failed (the file changed, an I/O error, an inconsistent build): true with *err if one did. A failed
 * stream serves no more loads: the model must be closed. */
bool masic_stream_failed(const masic_stream_t *stream, masic_error_t *err);

/* masic_wait_load and masic_reached, the hooks the generated code calls, are declared in masic_model.h. */

#endif
