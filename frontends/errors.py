"""The error every frontend raises for a model masic cannot import: one line, naming the cause; and how a library's
own exception is quoted in it."""

from masic.errors import MasicError


class FrontendError(MasicError, ValueError):
    """A model file or module that masic cannot import; the message names the file, module path or node."""


def first_line(err: BaseException) -> str:
    """The first line of a library's exception message (or its type), for a one-line error about a model file."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
