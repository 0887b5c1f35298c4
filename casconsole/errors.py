"""One error type for what a user must be told: `CasError(message, exit_status)`.

The command-line tools print `message` as one line on stderr and exit with `exit_status`; the
console shows `message` and dispatches on the family. Each family names where the problem is:
the settings, the network (upstream), the storage (the mirror's disk), an index, the server.
Anything that is not a CasError reaching a user is a bug.
"""

from __future__ import annotations

# exit statuses, the table of docs/operations.md
EXIT_OK = 0
EXIT_FAILED = 1  # the run went, but some files failed; or it could not run (upstream unreachable)
EXIT_USAGE = 2  # bad settings, bad arguments, or the mirror is busy
EXIT_PRUNE_WITHHELD = 3  # the prune guard kept a subdir's files that left the plan (max_prune)
EXIT_STORAGE = 4  # the mirror's disk: denied, read-only, full, or too little free space for the plan
EXIT_INTERRUPTED = 130  # Ctrl-C, SIGTERM, SIGHUP (128 + SIGINT, as a shell reports it)
EXIT_BROKEN_PIPE = 141  # the reader of the output went away (`| head`): 128 + SIGPIPE


class CasError(Exception):
    """A problem explained for the user; `exit_status` is what a command exits with."""

    exit_status: int = EXIT_FAILED

    def __init__(self, message: str, exit_status: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_status is not None:
            self.exit_status = exit_status

    def __str__(self) -> str:
        return self.message


class SettingsError(CasError):
    """Settings that cannot be used. `problems` lists each (`where: message`), one a line."""

    exit_status = EXIT_USAGE

    def __init__(self, problems: list | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NetworkError(CasError):
    """Upstream could not be reached or did not answer as it should."""


class RepoDataError(NetworkError):
    """Repodata that cannot be had or read; the message names the URL or file and the reason."""


class RepoDataNotFound(RepoDataError):
    """No repodata file of any known name exists for the subdir."""


class StorageError(CasError):
    """The mirror's storage cannot be read or written: permissions, a full disk, a bad path."""


class DiskError(StorageError):
    """The disk refused: a path that cannot be read or written (EACCES), a read-only
    filesystem, a full disk, or too little free space for a sync's plan. Exit status 4."""

    exit_status = EXIT_STORAGE

    @classmethod
    def of(cls, exc: OSError, doing: str = "") -> DiskError:
        """`path: cause` of an OSError (`doing` says what was being done, when it helps)."""
        return cls(os_error_message(exc) + (f" ({doing})" if doing else ""))


class IndexingError(CasError):
    """A channel folder that cannot be indexed or checked."""


class ServerError(CasError):
    """cas-server cannot start or serve as asked."""

    exit_status = EXIT_USAGE


class SyncError(CasError):
    """A sync that cannot run at all (a bad channel name, the mirror busy)."""

    exit_status = EXIT_USAGE


class Cancelled(Exception):
    """Work stopped because it was cancelled (not an error: the caller asked for it)."""


def os_error_message(exc: OSError) -> str:
    """`path: cause` for an OSError, the form every tool prints."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"
