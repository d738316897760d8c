"""The one exception type users see.

Anything that is the user's input being wrong (a missing file, a bad flag value,
a checkpoint from another program) raises `MlxgptError` with a one-line message
that says what was wrong and what to do. The CLI prints it and exits non-zero;
everything else is a bug and is allowed to show a traceback.
"""


class MlxgptError(Exception):
    """A user-facing error whose message is a single actionable line."""
