"""Runs a masic artifact's model from Python on the device, without masic installed.

This file is copied into every artifact folder beside `lib/libmasic_model.so`, whose C API (`include/masic_runtime.h`)
it wraps with ctypes; it needs only the Python standard library (numpy arrays are accepted and returned when numpy
is installed, else sequences of floats and lists):

    from masic_runtime import Model
    with Model("out/") as model:              # the artifact folder: lib/libmasic_model.so and weights.bin
        stats = model.run(x, steps=16)        # a whole sample: {"prediction": 3, "steps_run": 5, ...}
        model.reset()
        y, exit_now = model.step(x)           # one timestep: its output, and whether the exit rule holds

Each Model is an independent session (its own arena, neuron state and loading thread); models of different
artifacts load side by side, each library with its own symbols. A Model is used by one thread at a time. Errors are
`MasicError` exceptions whose message names the cause, as out/model prints it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Any

try:
    import numpy
except ImportError:  # numpy is optional
    numpy = None

LIBRARY = os.path.join("lib", "libmasic_model.so")
WEIGHTS = "weights.bin"
ERROR_BYTES = 1024  # MASIC_ERROR_BYTES
STATUS_NAMES = {1: "system error", 2: "input error", 3: "kernel error"}
RULES = ("none", "softmax_confidence", "margin", "stable_argmax")  # masic_rule_t, as in manifest.json


class MasicError(RuntimeError):
    """A call into the model failed; `status` is masic_status_t (also out/model's exit code for that failure)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Stats(ctypes.Structure):
    _fields_ = [
        ("steps_run", ctypes.c_int32),
        ("steps_computed", ctypes.c_int32),
        ("prediction", ctypes.c_int32),
        ("exited_early", ctypes.c_int32),
        ("load_wait_s", ctypes.c_double),
        ("weight_bytes_read", ctypes.c_uint64),
        ("state_bytes_read", ctypes.c_uint64),
    ]

    def as_dict(self) -> dict[str, Any]:
        stats = {name: getattr(self, name) for name, _ in self._fields_}
        stats["exited_early"] = bool(stats["exited_early"])
        return stats


class _OpenOptions(ctypes.Structure):
    _fields_ = [
        ("weights_path", ctypes.c_char_p),
        ("weights_fd", ctypes.c_int),
        ("arena", ctypes.c_void_p),
        ("arena_bytes", ctypes.c_size_t),
    ]


_FloatPointer = ctypes.POINTER(ctypes.c_float)


def _load_library(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)  # RTLD_LOCAL: another model's library keeps its own symbols
    except OSError as error:
        raise MasicError(2, f"cannot load the model's library {path}: {error}") from None
    session = ctypes.c_void_p
    signatures = {
        "masic_model_name": (ctypes.c_char_p, []),
        "masic_input_floats": (ctypes.c_size_t, []),
        "masic_output_floats": (ctypes.c_size_t, []),
        "masic_default_timesteps": (ctypes.c_int32, []),
        "masic_max_timesteps": (ctypes.c_int32, []),
        "masic_open": (
            ctypes.c_int,
            [ctypes.POINTER(_OpenOptions), ctypes.POINTER(session), ctypes.c_char_p, ctypes.c_size_t],
        ),
        "masic_step": (ctypes.c_int, [session, _FloatPointer, _FloatPointer, ctypes.POINTER(ctypes.c_int)]),
        "masic_run": (
            ctypes.c_int,
            [session, _FloatPointer, ctypes.c_int32, ctypes.c_int32, _FloatPointer, ctypes.POINTER(_Stats)],
        ),
        "masic_reset": (ctypes.c_int, [session]),
        "masic_stats": (ctypes.c_int, [session, ctypes.POINTER(_Stats)]),
        "masic_set_exit_rule": (ctypes.c_int, [session, ctypes.c_int, ctypes.c_double, ctypes.c_int32]),
        "masic_close": (None, [session]),
        "masic_last_error": (ctypes.c_char_p, [session]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _floats(values: Any, count: int, what: str) -> ctypes.Array:
    """A C array of `count` float32 from a numpy array or a (nested) sequence of numbers."""
    if numpy is not None:
        flat = numpy.ascontiguousarray(values, dtype=numpy.float32).reshape(-1)
        if flat.size != count:
            raise MasicError(2, f"{what} holds {flat.size} values; the model takes {count}")
        return (ctypes.c_float * count).from_buffer_copy(flat.tobytes())
    flat = list(_flatten(values))
    if len(flat) != count:
        raise MasicError(2, f"{what} holds {len(flat)} values; the model takes {count}")
    return (ctypes.c_float * count)(*flat)


def _flatten(values: Any) -> Any:
    if isinstance(values, Sequence):
        for value in values:
            yield from _flatten(value)
    else:
        yield float(values)


def _array(buffer: ctypes.Array, shape: tuple[int, ...]) -> Any:
    """The floats of `buffer` as a numpy array of `shape` (1 or 2 dimensions), or as (nested) lists without numpy."""
    if numpy is None:
        values = list(buffer)
        return values if len(shape) == 1 else [values[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])]
    return numpy.frombuffer(bytes(buffer), dtype=numpy.float32).reshape(shape).copy()


class Model:
    """An open model of the artifact folder `path` (or of `library` and `weights` given separately)."""

    def __init__(self, path: str = ".", library: str | None = None, weights: str | None = None) -> None:
        self._lib = _load_library(library or os.path.join(path, LIBRARY))
        self._session = ctypes.c_void_p()
        self.input_floats = self._lib.masic_input_floats()
        self.output_floats = self._lib.masic_output_floats()
        self.name = self._lib.masic_model_name().decode()
        self.default_timesteps = self._lib.masic_default_timesteps()
        self.max_timesteps = self._lib.masic_max_timesteps()
        error = ctypes.create_string_buffer(ERROR_BYTES)
        options = _OpenOptions(os.fsencode(weights or os.path.join(path, WEIGHTS)), -1, None, 0)
        status = self._lib.masic_open(ctypes.byref(options), ctypes.byref(self._session), error, ERROR_BYTES)
        if status:
            raise MasicError(status, error.value.decode(errors="replace"))

    def _check(self, status: int) -> None:
        if status:
            message = self._lib.masic_last_error(self._session).decode(errors="replace")
            raise MasicError(status, message)

    def _open_session(self) -> ctypes.c_void_p:
        if not self._session:
            raise MasicError(2, "the model is closed")
        return self._session

    def step(self, x: Any) -> tuple[Any, bool]:
        """Runs one timestep on input x; returns its output and whether the exit rule holds after it."""
        session = self._open_session()
        output = (ctypes.c_float * self.output_floats)()
        exit_now = ctypes.c_int()
        self._check(self._lib.masic_step(session, _floats(x, self.input_floats, "the input"), output, exit_now))
        return _array(output, (self.output_floats,)), bool(exit_now.value)

    def run(self, x: Any, steps: int | None = None, outputs: bool = False) -> dict[str, Any]:
        """Runs a whole sample from the initial state: x is one input (presented at every step) or a sequence of
        `steps` inputs. Stops early when the exit rule holds. Returns the stats as a dict; with outputs=True, also
        "outputs", the outputs of the steps run."""
        session = self._open_session()
        steps = steps or self.default_timesteps
        n_inputs = 1 if _size(x) == self.input_floats else steps
        inputs = _floats(x, self.input_floats * n_inputs, "the input")
        kept = (ctypes.c_float * (self.output_floats * steps))() if outputs else None
        stats = _Stats()
        self._check(self._lib.masic_run(session, inputs, n_inputs, steps, kept, ctypes.byref(stats)))
        result = stats.as_dict()
        if kept is not None:
            result["outputs"] = _array(kept, (steps, self.output_floats))[: stats.steps_run]
        return result

    def reset(self) -> None:
        """Neuron state back to its initial values: what a fresh Model gives."""
        self._check(self._lib.masic_reset(self._open_session()))

    def stats(self) -> dict[str, Any]:
        """The current sample's figures after step() calls."""
        stats = _Stats()
        self._check(self._lib.masic_stats(self._open_session(), ctypes.byref(stats)))
        return stats.as_dict()

    def set_exit_rule(self, rule: str, threshold: float = 0.0, min_steps: int = 0) -> None:
        """Replaces the exit rule: "none", "softmax_confidence", "margin" or "stable_argmax"."""
        if rule not in RULES:
            raise MasicError(2, f"unknown exit rule {rule!r}; choose one of {', '.join(RULES)}")
        self._check(self._lib.masic_set_exit_rule(self._open_session(), RULES.index(rule), threshold, min_steps))

    def close(self) -> None:
        if self._session:
            self._lib.masic_close(self._session)
            self._session = ctypes.c_void_p()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_session", None):
            self.close()


def _size(values: Any) -> int:
    if numpy is not None:
        return int(numpy.size(values))
    return sum(1 for _ in _flatten(values))
