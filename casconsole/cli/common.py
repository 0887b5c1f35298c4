"""Settings flags shared by the commands, and the one way they report bad input."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from casconsole.cli import prog_name
from casconsole.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
    EXIT_USAGE,
    CasError,
    os_error_message,
)
from casconsole.redact import redact_url
from casconsole.settings import (
    SCHEMA,
    Settings,
    SettingsError,
    describe_keys,
    load_settings,
    parse_text_value,
)

# flag -> key; list keys take the flag once per item, or a comma-separated list
_FLAGS = {
    "--remote-url": "remote_url",
    "--mirror-dir": "mirror_dir",
    "--channel-name": "channel_name",
    "--platform": "platforms",
    "--license-blacklist": "license_blacklist",
    "--blacklist": "blacklist",
    "--whitelist": "whitelist",
    "--concurrency": "concurrency",
    "--timeout": "timeout",
    "--retries": "retries",
    "--ssl-verify": "ssl_verify",
    "--proxy": "proxy",
    "--max-prune": "max_prune",
}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "settings", "each flag sets one key, over the files and CAS_MIRROR_<KEY> variables"
    )
    group.add_argument("--config", metavar="FILE", type=Path, help="a settings file (layer 4)")
    for flag, key in _FLAGS.items():
        is_list = SCHEMA[key].kind == "list"
        group.add_argument(
            flag,
            dest=f"set_{key}",
            metavar=key.upper() if not is_list else "ITEM",
            action="append" if is_list else "store",
            help=_escaped(SCHEMA[key].help) + (" (repeat, or comma-separate)" if is_list else ""),
        )
    group.add_argument("--no-prune", dest="set_prune", action="store_const", const="false",
                       help="keep mirrored files that left the plan")  # fmt: skip
    keys = _escaped(describe_keys())
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="set any key (lists comma-separated); keys:\n" + keys)  # fmt: skip


def _escaped(text: str) -> str:
    """Help text for argparse, which reads % as a format (`max_prune`'s 10% broke --help)."""
    return text.replace("%", "%%")


def cli_layer(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    """The command-line layer: key -> (value, the flag that set it)."""
    flag_of = {key: flag for flag, key in _FLAGS.items()} | {"prune": "--no-prune"}
    layer: dict[str, tuple[Any, str]] = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            fail(f"--set {item}: expected KEY=VALUE")
        layer[key.strip()] = (parse_text_value(key.strip(), text), f"--set {key.strip()}")
    for name, raw in vars(args).items():
        if not name.startswith("set_") or raw is None:
            continue
        key = name[4:]
        value = parse_text_value(key, ",".join(raw) if isinstance(raw, list) else raw)
        layer[key] = (value, flag_of[key])
    return layer


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The effective settings, or exit 2 with every problem listed (no traceback)."""
    try:
        return load_settings(args.config, env=env, cli=cli_layer(args))
    except SettingsError as err:
        fail(str(err))


def version_text() -> str:
    """`casconsole <version>`, from the installed package's metadata."""
    import importlib.metadata  # 0.02 s (email, zipfile): every command but --version goes without

    try:
        return f"casconsole {importlib.metadata.version('casconsole')}"
    except importlib.metadata.PackageNotFoundError:
        return "casconsole (version unknown: not installed as a package)"


class _VersionAction(argparse.Action):
    """`--version`: the metadata is read only when asked, not on every start."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit()


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionAction, help="print casconsole's version and exit")


def report_error(message: str) -> None:
    """`prog: error: ...` on stderr, a line for each line of `message`, secrets in URLs hidden."""
    prog = prog_name()
    with contextlib.suppress(OSError):  # stderr itself gone: nobody is left to tell
        for line in redact_url(message).splitlines() or [""]:
            print(f"{prog}: error: {line}", file=sys.stderr)


def fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    report_error(message)
    sys.exit(status)


def stdout_gone() -> None:
    """The reader of stdout went away (`| head`): send what is still buffered, and all further
    output, nowhere, so that neither this command nor Python's exit fails on it."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def entry_point(main: Callable[..., int]) -> Callable[..., int]:
    """A command's `main`, never ending in a traceback: a CasError becomes its message on stderr
    and its exit status; an OSError that reaches here (a file or folder that cannot be read or
    written) `path: cause` and EXIT_STORAGE; a closed output pipe EXIT_BROKEN_PIPE, quietly;
    Ctrl-C `interrupted` and EXIT_INTERRUPTED. The statuses are docs/operations.md's table."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            status = main(*args, **kwargs)
            sys.stdout.flush()  # a reader gone is found out here, not in Python's exit
            return status
        except CasError as exc:
            report_error(exc.message)
            return exc.exit_status
        except BrokenPipeError:
            stdout_gone()
            return EXIT_BROKEN_PIPE
        except OSError as exc:
            report_error(os_error_message(exc))
            return EXIT_STORAGE
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                print(f"{prog_name()}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


def start_detached(
    command: list[str],
    output: Path,
    config: Path,
    started: Callable[[int], bool],
    *,
    timeout: float,
    tail: int = 5,
    env: Mapping[str, str] | None = None,
) -> tuple[int, int | None]:
    """Run `command` as its own session (setsid: no controlling terminal, no SIGHUP when the SSH
    session ends), its output appended to `output`, and wait until `started(pid)` says it is up.

    (pid, None) once it is up or `timeout` passed; (pid, exit status) when it exited first, its
    last `tail` lines printed on stderr and its settings file `config` removed (it read it, or
    never will). `cas-sync --detach` and `cas-server --detach` start their children so.
    """
    import subprocess
    import time

    with open(output, "ab") as out:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            close_fds=True,
            env=None if env is None else dict(env),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            with contextlib.suppress(OSError):
                config.unlink()
            for line in output.read_text(encoding="utf-8", errors="replace").splitlines()[-tail:]:
                print(line, file=sys.stderr)
            return child.pid, code
        if started(child.pid):
            break
        time.sleep(0.05)
    return child.pid, None
