"""The root of every error masic reports to a user as one line (the CLI catches these, and only these)."""


class MasicError(Exception):
    """A problem with the user's input or environment that masic can name: bad model, budget, option, toolchain."""
