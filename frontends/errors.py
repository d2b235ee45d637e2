"""The error every frontend raises for a model masic cannot import: one line, naming the cause; and how a library's
own exception is quoted in it."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from masic.errors import MasicError


class FrontendError(MasicError, ValueError):
    """A model file or module that masic cannot import; the message names the file, module path or node."""


class FrontendWarning(UserWarning):
    """Something a user should know about how a model compiles (the CLI prints it as one `masic: warning:` line)."""


def first_line(err: BaseException) -> str:
    """The first line of a library's exception message (or its type), for a one-line error about a model file."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# What a model object built from an untrusted file raises when an attribute is missing or of another type than its
# class gives it: a hand-edited pickle or archive can set any attribute to anything its reader builds (a list for a
# weight, text for a stride, a number for a stack trace, 2**200 for a scalar).
MALFORMED = (AttributeError, TypeError, ValueError, IndexError, KeyError, RuntimeError, ArithmeticError)


@contextmanager
def well_formed(loc: str) -> Iterator[None]:
    """Turns the errors of a malformed module or graph node at `loc` into a one-line refusal naming it."""
    try:
        yield
    except FrontendError:
        raise
    except MALFORMED as err:
        raise FrontendError(f"{loc} is malformed: {type(err).__name__}: {first_line(err)}") from None


@contextmanager
def library_warnings_silenced() -> Iterator[None]:
    """No warnings from the libraries that read a model file about its odd contents (NIR dividing by a stride of 0,
    PyTorch remarking on a pickle protocol): the CLI's one line, or nothing, says what matters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
