"""The errors a Millrace process cannot recover from in place."""

from __future__ import annotations


class ServiceFailed(RuntimeError):
    """The main loop cannot go on (a fatal client error, or no progress for too long); the
    process exits non-zero so that its supervisor restarts it."""
