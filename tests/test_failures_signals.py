"""Stopping, as an operator stops things: Ctrl-C or SIGTERM stop a sync within 2 seconds even when
its transfers (of packages, or of the repodata) have stalled, leave the mirror consistent and
the next run resumes; Ctrl-C at any moment of a command is one line, never a traceback; a reader
that goes away (`| head`) is exit 141, quietly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import wait_for
from upstream_server import Fault, Upstream, make_channel, mirror_problems, spec

from casconsole.sync.engine import read_status

SUBDIRS = ("linux-64", "noarch")
BIN = Path(sys.executable).parent  # the console scripts, as installed


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    make_channel(
        root,
        {
            "linux-64": [spec(f"lib{i}", "1.0", "linux-64", kb=400) for i in range(4)],
            "noarch": [spec(f"py{i}", "1.0", kb=60) for i in range(3)],
        },
    )
    with Upstream(root) as server:
        yield server


@pytest.fixture
def config(tmp_path, upstream):
    path = tmp_path / "cas.yaml"
    path.write_text(f"remote_url: {upstream.url}\nmirror_dir: {tmp_path / 'mirror'}\nplatforms: [linux-64]\n")
    return path


def start(*args, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "cas-sync"), *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True
    )


def packages(upstream) -> list[str]:
    return [f"{sd}/{p.name}" for sd in SUBDIRS for p in sorted((upstream.root / sd).glob("*.conda"))]


# ---------------------------------------------------------------- stopping a stalled sync


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("stalled", ["packages", "repodata"])
def test_a_stalled_sync_stops_within_2_seconds_and_the_next_run_resumes(
    upstream, config, tmp_path, sig, stalled
):
    mirror = tmp_path / "mirror"
    if stalled == "repodata":
        stalling = ["linux-64/repodata.json.zst"]
    else:
        stalling = [path for path in packages(upstream) if path.startswith("linux-64/")]
    for path in stalling:  # half of the file is sent, then nothing more for two minutes
        upstream.always(path, Fault.stall(120))
    process = start("--config", config, "--json")
    assert wait_for(lambda: all(upstream.seen(path) for path in stalling), 60)
    time.sleep(0.5)  # well into the stall
    sent = time.monotonic()
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    took = time.monotonic() - sent
    assert process.returncode == 130, err
    assert took < 2.0, f"stopped {took:.2f} s after {sig.name}"
    assert "Traceback" not in err and f"cas-sync: {sig.name}: stopping" in err
    assert read_status(mirror).state == "cancelled"
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []

    upstream.clear()
    result = subprocess.run([str(BIN / "cas-sync"), "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    assert sorted(f"{p.parent.name}/{p.name}" for p in (mirror / "pkgs").glob("*/*.conda")) == packages(
        upstream
    )
    if stalled == "packages":  # the halves received before the stall were kept, and resumed
        resumed = {r.path for r in upstream.requests if r.range and r.range != "bytes=0-"}
        assert resumed == set(stalling), upstream.requests


# ---------------------------------------------------------------- Ctrl-C at any moment

# seconds after the command's own modules started loading (its first native module is mapped):
# the interpreter's start before that is Python's, not the command's
MOMENTS = {
    "show": (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3),  # it is over in about 0.3 s
    "dry-run": (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6),
    "sync": (0.0, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0, 1.5),
}
LOADING = "/msgspec/"  # mapped while casconsole.cli.sync is being imported


def loading(pid: int) -> bool:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True  # gone already
    # a process that has ended and is not yet reaped maps nothing: with its bytecode compiled,
    # `--show` can be over between two looks
    return LOADING in maps or not maps


@pytest.mark.parametrize("command", ["sync", "dry-run", "show"])
def test_ctrl_c_at_any_moment_is_one_line(upstream, config, tmp_path, command):
    """SIGINT at moments from the command's modules loading to its end."""
    for path in packages(upstream):
        upstream.always(path, Fault.slow(400_000))  # a sync of a second and a half or so
    args = {"sync": (), "dry-run": ("--dry-run",), "show": ("--show",)}[command]
    seen = set()
    for moment in MOMENTS[command]:
        process = start("--config", config, *args)
        # looked at often: with its bytecode compiled, `--show` is over 0.05 s after that
        assert wait_for(lambda pid=process.pid: loading(pid), 30, interval=0.002)
        time.sleep(moment)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert "Traceback" not in err + out, (moment, err)
        # -2: ended by SIGINT, which a shell reports as 130 (an interrupt while modules load)
        assert process.returncode in (0, 130, -2), (moment, process.returncode, err)
        if process.returncode and err.strip():  # silent only when ended by it while exiting
            last = err.strip().splitlines()[-1]
            assert last in (
                "cas-sync: interrupted",
                "cas-sync: SIGINT: stopping (press Ctrl-C again to force)",
            ) or (last.startswith("cas-sync: cancelled in")), (moment, err)
        seen.add((moment, process.returncode))
    assert {code for _, code in seen} & {130, -2}, "no run was interrupted"
    if command == "sync":
        upstream.clear()
        assert (
            subprocess.run([str(BIN / "cas-sync"), "--config", str(config)], capture_output=True).returncode
            == 0
        )
        assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []


def test_a_second_ctrl_c_stops_at_once(upstream, config):
    for path in packages(upstream):
        upstream.always(path, Fault.stall(120))
    process = start("--config", config, "--json")
    assert wait_for(lambda: upstream.seen(packages(upstream)[0]), 60)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err


# ---------------------------------------------------------------- a reader that goes away


def closed_reader(*command: str) -> tuple[int, str]:
    """Run `command` with a stdout whose reader is gone before anything is written."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    return process.wait(timeout=120), err


@pytest.mark.parametrize(
    "args",
    [
        ("--dry-run",),
        ("--dry-run", "--json"),
        ("--show",),
        ("--show", "--json"),
        ("--status",),
        ("--status", "--json"),
    ],
)
def test_a_closed_pipe_is_exit_141_without_a_traceback(upstream, config, args):
    code, err = closed_reader(str(BIN / "cas-sync"), "--config", str(config), *args)
    assert (code, err) == (141, "")


def test_a_sync_whose_reader_goes_away_stops_cleanly(upstream, config, tmp_path):
    for args in ((), ("--json",)):
        code, err = closed_reader(str(BIN / "cas-sync"), "--config", str(config), *args)
        assert code == 141 and "Traceback" not in err, err
        assert read_status(tmp_path / "mirror").state == "cancelled"
        assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
    result = subprocess.run([str(BIN / "cas-sync"), "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr  # the lock was released


def test_head_of_each_command(upstream, config, tmp_path):
    """`| head` as typed in a shell: whatever head leaves unread, no traceback."""
    channel = tmp_path / "internal-pkgs"
    (channel / "noarch").mkdir(parents=True)
    assert subprocess.run([str(BIN / "cas-index"), str(channel)], capture_output=True).returncode == 0
    synced = subprocess.run([str(BIN / "cas-sync"), "--config", str(config)], capture_output=True)
    assert synced.returncode == 0
    for command in (
        f"{BIN}/cas-sync --config {config} --dry-run",
        f"{BIN}/cas-sync --config {config} --show",
        f"{BIN}/cas-sync --config {config} --status",
        f"{BIN}/cas-index --status {channel}",
    ):
        result = subprocess.run(
            ["bash", "-c", f"{command} | head -1; echo status=${{PIPESTATUS[0]}} >&2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stderr and "Exception" not in result.stderr, command
        assert result.stderr.splitlines()[-1] in ("status=0", "status=141"), (command, result.stderr)
        assert len(result.stdout.splitlines()) == 1


def test_ctrl_c_at_any_moment_of_an_index_run(tmp_path, demo_channel):
    """cas-index over the demo channel's 120-odd packages, read by a pool of processes."""
    import shutil

    channel = tmp_path / "internal-pkgs"
    for subdir in ("linux-64", "noarch"):
        shutil.copytree(demo_channel / subdir, channel / subdir, ignore=shutil.ignore_patterns("repodata*"))
    seen = set()
    for moment in (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8):
        shutil.rmtree(channel / ".cache", ignore_errors=True)  # every run reads every package
        process = subprocess.Popen(
            [str(BIN / "cas-index"), str(channel)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # looked at often: with its bytecode compiled, `--show` is over 0.05 s after that
        assert wait_for(lambda pid=process.pid: loading(pid), 30, interval=0.002)
        time.sleep(moment)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert "Traceback" not in err + out and "Exception" not in err, (moment, err)
        assert process.returncode in (0, 130, -2), (moment, process.returncode, err)
        if process.returncode and err.strip():
            assert err.strip().splitlines()[-1].startswith("cas-index: interrupted"), (moment, err)
        seen.add(process.returncode)
    assert seen & {130, -2}, "no run was interrupted"
    result = subprocess.run([str(BIN / "cas-index"), str(channel)], capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_ctrl_c_landing_in_an_interpreter_callback_still_stops_the_command(tmp_path):
    """A KeyboardInterrupt raised where Python cannot raise it (an import lock's weakref callback,
    here a __del__) is "ignored" by the interpreter: the command would go on as if no key had been
    pressed, after printing a traceback. casconsole.cli delivers it again to the main thread."""
    script = tmp_path / "cas-sync"
    script.write_text(
        "import time\nimport casconsole.cli\n"
        "class Dropped:\n    def __del__(self):\n        raise KeyboardInterrupt\n"
        "Dropped()\ntime.sleep(5)\nprint('went on')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert "went on" not in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "cas-sync: interrupted"
    assert done.returncode in (-signal.SIGINT, 130)
