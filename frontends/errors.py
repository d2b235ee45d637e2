"""The error every frontend raises for a model masic cannot import: one line, naming the cause."""

from masic.errors import MasicError


class FrontendError(MasicError, ValueError):
    """A model file or module that masic cannot import; the message names the file, module path or node."""
