"""The root of every error Millrace raises, and the errors a process cannot recover from in place.

Every exception class of the library and the services derives from :class:`MillraceError` (and
keeps its built-in base, so ``except ValueError`` around a settings or an event check still
works): ``except MillraceError`` catches what Millrace itself refused, and nothing else.
"""

from __future__ import annotations


class MillraceError(Exception):
    """Something Millrace refused or could not do, with a reason meant for the user."""


class ServiceFailed(MillraceError, RuntimeError):
    """The main loop cannot go on (a fatal client error, or no progress for too long); the
    process exits non-zero so that its supervisor restarts it."""
