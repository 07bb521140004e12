"""The one exception type a user sees: a one-line message naming the thing and the fix."""


class DaresError(Exception):
    """A user-facing error; the CLI prints it as one line and exits with status 2."""
