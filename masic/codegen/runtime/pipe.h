/* pipe.h: out/model --stream and --stream-samples: the model behind a shell pipe, raw float32 frames on standard
 * input, one line of results per step or per sample on standard output. */
#ifndef MASIC_PIPE_H
#define MASIC_PIPE_H

#include "args.h"
#include "masic_runtime.h"
#include "report.h"

/* Exits with the session's last error (one line on stderr, its status as the exit code) unless status is MASIC_OK. */
void masic_check_session(masic_status_t status, const masic_session_t *session);

/* Runs frames from stdin until its end; returns only if every frame was whole and every line written, else exits
 * with one line on stderr (2 for a short frame, 1 if stdout was closed or failed). */
void masic_run_pipe(masic_stream_mode_t mode, const masic_schedule_t *s, masic_session_t *session);

#endif
