"""Errors the operator sees as one clear line; each carries the command-line exit code."""


class QsnapError(Exception):
    """A problem qsnap explains to the operator instead of showing a traceback."""

    exit_code = 2


class UsageError(QsnapError):
    """Bad arguments: an unknown id, a non-numeric id, a wrong combination."""


class ConnectionProblem(QsnapError):
    """The database cannot be reached or refuses us."""


class SchemaProblem(QsnapError):
    """The database lacks the tables or columns qsnap relies on."""


class JobFailed(QsnapError):
    """A job ended failed; the data stays valid and the job can be run again."""

    exit_code = 1


class TargetBusy(QsnapError):
    """Another refresh of the same target holds its lock."""


class RefreshInterrupted(QsnapError):
    """Refresh Population stopped at its membership step; the message says what state it left."""


class TargetLockLost(QsnapError):
    """The session holding a target's refresh lock ended while the refresh ran."""
