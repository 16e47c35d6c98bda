"""A command whose reader goes away early (``llem -h | head -3``) ends quietly, never with a traceback.

Python ignores SIGPIPE, so writing to a closed pipe raises BrokenPipeError, and the interpreter's final
flush of stdout raises it again. ``quiet_on_closed_pipe`` runs a command, flushes its output, and turns
a closed pipe into exit status 141 (128 + SIGPIPE: what a shell reports for a tool ended by it) with
nothing more written. Standard library only: every layer's command-line entry may use it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

CLOSED_PIPE_EXIT = 141  # 128 + SIGPIPE


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null, so the interpreter's final flush of stdout cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured by a test): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def quiet_on_closed_pipe(run: Callable[[], int]) -> int:
    """Return ``run()``'s exit code, flushing stdout before returning; CLOSED_PIPE_EXIT, with no traceback and
    nothing more written, when the reader of stdout has gone away (BrokenPipeError)."""
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _stdout_to_devnull()
        return CLOSED_PIPE_EXIT
