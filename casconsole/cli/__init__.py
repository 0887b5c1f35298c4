"""Command-line entry points (argparse); each `main` returns an exit status.

A Ctrl-C while a command is still starting (importing its modules, before its `main` runs and
`cli.common.entry_point` takes over) ends it with one line instead of a traceback: Python then
ends the process by SIGINT, exit status 130 in a shell. A Ctrl-C landing in a callback the
interpreter runs on its own (the import system's module-lock callbacks) cannot be raised there:
Python would print "Exception ignored ... Traceback" and go on as if no key had been pressed. It
is delivered again to the main thread instead, where the command stops as it should.
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


def _interrupt_in_callback(report, _previous=sys.unraisablehook) -> None:
    if isinstance(report.exc_value, KeyboardInterrupt):
        import _thread
        import threading

        # from another thread, a moment later: raised now, it would land in this hook again
        again = threading.Timer(0.05, _thread.interrupt_main)
        again.daemon = True
        again.start()
        return
    _previous(report)


sys.unraisablehook = _interrupt_in_callback
