"""Command-line entry points (argparse); each `main` returns an exit status.

A Ctrl-C while a command is still starting (importing its modules, before its `main` runs and
`cli.common.entry_point` takes over) ends it with one line instead of a traceback: Python then
ends the process by SIGINT, exit status 130 in a shell.
"""

from __future__ import annotations

import os
import sys

_COMMANDS = {"sync.py": "cas-sync", "index.py": "cas-index", "server.py": "cas-server",
             "installer.py": "cas-installer", "console.py": "casconsole",
             "upload.py": "cas-upload"}  # fmt: skip


def prog_name() -> str:
    """The command's name for its messages, also when run as `python -m casconsole.cli.sync`."""
    name = os.path.basename(sys.argv[0])
    return _COMMANDS.get(name, name) or "casconsole"


def _interrupted_while_starting(kind, value, tb, _previous=sys.excepthook) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print(f"{prog_name()}: interrupted", file=sys.stderr)
        return
    _previous(kind, value, tb)


sys.excepthook = _interrupted_while_starting
