"""The loader's C sources (masic/codegen/runtime/), listed once for every build that compiles them: artifacts
(artifact.py), the loader's tests (tests/runtime) and the fuzzers (fuzz/). No tvm here: the tests and the fuzzers
use this module without it.

`MASIC_SANITIZE=1` in the environment builds host artifacts with AddressSanitizer and UndefinedBehaviorSanitizer
(dynamically linked, since the sanitizers' runtimes do not link statically): the loader and the generated model.c
are instrumented, the kernels (TVM's LLVM objects) are linked as they are.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

RUNTIME_DIR = Path(str(files("masic.codegen") / "runtime"))
# The library an artifact ships (lib/libmasic_model.a and .so, with the generated model.c, the kernels and the thread
# pool): an open model, its timestep loop, the loading thread, checking weights.bin (CRC-32C) and the build, and the
# profiler out/model --profile switches on (process-wide).
LIBRARY_SOURCES = (
    "session.c",
    "crc32c.c",
    "exit_rule.c",
    "files.c",
    "model_check.c",
    "profile.c",
    "stream.c",
    "util.c",
    "weights.c",
)
PUBLIC_HEADER = "masic_runtime.h"  # the library's API, shipped as include/masic_runtime.h
# out/model: the command line, .npy inputs and the reports, on top of the library; loader.c holds main().
PROGRAM_SOURCES = ("loader.c", "args.c", "input.c", "npy.c", "pipe.c", "report.c")
# Every part of the loader.
LOADER_SOURCES = (*PROGRAM_SOURCES, *LIBRARY_SOURCES)
PARALLEL_SOURCE = "parallel.c"  # the thread pool behind parallel TVM kernels
# The parsers of untrusted bytes and what they call, without main(), the loop or the loading thread: what a fuzzer
# links.
PARSER_SOURCES = tuple(
    s for s in LOADER_SOURCES if s not in ("loader.c", "pipe.c", "profile.c", "report.c", "session.c", "stream.c")
)

SANITIZE_ENV = "MASIC_SANITIZE"
SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


def sanitize_requested() -> bool:
    """True if MASIC_SANITIZE asks for sanitizer builds (any value but empty or 0)."""
    return os.environ.get(SANITIZE_ENV, "") not in ("", "0")
