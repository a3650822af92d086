"""The one exception type a user can cause; the CLI prints it as a single line, without a traceback."""


class CxraugError(Exception):
    """A problem the user can fix: the message says what went wrong and how to fix it."""
