"""contrib/systemd: the units are checked by systemd itself (`systemd-analyze verify` and its
security report), and their commands are run the way the units run them: as an unprivileged
service user, without new privileges or capabilities, with every file system read-only but the
paths the unit may write (ProtectSystem=strict + ReadWritePaths), memory never both writable and
executable (MemoryDenyWriteExecute), a /tmp of their own. A sync then mirrors a loopback
upstream and a server serves it, as they would from the timer and at boot.

The sandbox is made here with a mount namespace, prctl and setpriv (no systemd runs in a test
machine's container); it needs root, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from reach import COVER, closed_folders, hiding, needed
from upstream_server import Upstream, make_channel, mirror_problems, spec

UNITS = Path(__file__).resolve().parents[1] / "contrib" / "systemd"
BIN = Path(sys.executable).parent
INSTALLED = "/opt/casconsole/bin/"
MIRROR = "/srv/cas-mirror"


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values, in order]}} (keys may repeat, as systemd allows)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{path.name}:{number}: not KEY=VALUE in a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(name: str) -> dict[str, list[str]]:
    return read_unit(UNITS / name)["Service"]


# ---------------------------------------------------------------- what the units say


def test_units_run_as_a_dedicated_user_with_the_hardening_options():
    for name in ("cas-server.service", "cas-sync.service"):
        svc = service(name)
        assert svc["User"] == ["casmirror"] and svc["Group"] == ["casmirror"], name
        for key, value in {
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
            "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes",
            "RestrictSUIDSGID": "yes", "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
            "KillSignal": "SIGTERM",
        }.items():  # fmt: skip
            assert svc[key] == [value], (name, key)
    assert service("cas-sync.service")["ReadWritePaths"] == [MIRROR]
    assert service("cas-sync.service")["Type"] == ["oneshot"]  # no start timeout: a sync takes hours
    assert "ReadWritePaths" not in service("cas-server.service")  # it only reads the mirror
    timer = read_unit(UNITS / "cas-sync.timer")
    assert timer["Timer"]["Persistent"] == ["yes"] and timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def installed_here(tmp_path: Path) -> Path:
    """The units as installed on this machine: their commands point at this environment."""
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in UNITS.iterdir():
        (folder / unit.name).write_text(unit.read_text().replace(INSTALLED, f"{BIN}/"))
    return folder


def test_systemd_analyze_verify_and_security(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: only the parse above checks the units")
    folder = installed_here(tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["cas-server.service", "cas-sync.service", "cas-sync.timer"]
    result = subprocess.run(["systemd-analyze", "verify", *names], cwd=folder, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    for name in ("cas-server.service", "cas-sync.service"):
        report = subprocess.run(["systemd-analyze", "security", "--offline=yes", name], cwd=folder,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        match = re.search(rf"Overall exposure level for {re.escape(name)}: ([\d.]+) (\w+)", report.stdout)
        assert match, report.stdout + report.stderr
        assert float(match.group(1)) <= 2.0 and match.group(2) == "OK", match.group(0)


# ---------------------------------------------------------------- the commands, sandboxed

# run in a private mount namespace: /root and /home emptied (ProtectHome), and any folder closed
# to others above the checkout or Python, but for what this test machine keeps there (its Python,
# the checkout: a real install has them in /usr and /opt; tests/reach.py); every
# mount read-only but the API file systems (ProtectSystem=strict), the unit's writable paths bound
# back read-write; then MDWE (MemoryDenyWriteExecute) and the service user, and exec
SANDBOX = (
    COVER
    + r"""
import ctypes, json, sys
spec = json.loads(sys.argv[1])
def mount(*args):
    subprocess.run(["mount", *args], check=True)
cover(spec["hide"])
points = set()
with open("/proc/self/mountinfo") as fh:
    for line in fh:
        point = line.split()[4].encode().decode("unicode_escape")
        if not point.startswith(("/proc", "/sys", "/dev")):
            points.add(point)
for point in sorted(points, key=len):
    subprocess.run(["mount", "-o", "remount,bind,ro", point], stderr=subprocess.DEVNULL)
for path in spec["rw"]:
    mount("--bind", path, path)
    mount("-o", "remount,bind,rw", path)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("sandbox: prctl(PR_SET_MDWE): errno %d" % ctypes.get_errno())
user = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs"]
caps = ["--bounding-set=-all", "--inh-caps=-all"]  # CapabilityBoundingSet=, AmbientCapabilities=
os.execvpe("setpriv", ["setpriv", *user, *caps, *spec["argv"]], spec["env"])
"""
)


def sandbox_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("the units' sandbox is made with mount namespaces and setpriv: run as root")
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")


def sandboxed(unit: str, rw: list[Path], env: dict[str, str], extra: tuple[str, ...] = ()) -> list[str]:
    """The argv that runs the unit's ExecStart in its sandbox, the writable paths `rw` (the mirror
    first, standing for /srv/cas-mirror); `env` as the settings and Environment= give it."""
    svc = service(unit)
    argv = svc["ExecStart"][0].replace(INSTALLED, f"{BIN}/").split() + list(extra)
    environment = dict(value.split("=", 1) for value in svc.get("Environment", []))
    environment.update(PATH=f"{BIN}:/usr/bin:/bin", HOME="/nonexistent", **env)
    paths = needed()
    homes = [home for home in (Path("/root"), Path("/home")) if home.is_dir()]
    hide = hiding(sorted(set(homes + closed_folders(paths))), paths)
    spec = {"rw": [str(p) for p in rw], "argv": argv, "env": environment, "hide": hide}
    return ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", SANDBOX,
            json.dumps(spec)]  # fmt: skip


@pytest.fixture
def site():
    """A folder like /srv and /etc of a host: readable by the service user, owned by root."""
    base = Path(tempfile.mkdtemp(prefix="cas-units-", dir="/tmp"))
    base.chmod(0o755)
    mirror, private_tmp, cache = base / "srv-cas-mirror", base / "private-tmp", base / "cache-cas-server"
    for folder in (mirror, private_tmp, cache):
        folder.mkdir()
        shutil.chown(folder, "nobody", "nogroup")
    yield base, mirror, private_tmp, cache
    shutil.rmtree(base, ignore_errors=True)


def test_sync_and_server_units_run_their_commands_in_their_sandbox(site):
    sandbox_or_skip()
    base, mirror, private_tmp, cache = site
    root = base / "upstream"
    make_channel(root, {"linux-64": [spec("tool", "1.0", "linux-64")], "noarch": [spec("helper", "1.0")]})
    settings = base / "etc-cas-mirror"
    env = {"CAS_MIRROR_SYSTEM_CONFIG": str(settings), "CAS_MIRROR_USER_CONFIG": "/nonexistent/.cas-mirror",
           "TMPDIR": str(private_tmp)}  # fmt: skip

    with Upstream(root) as upstream:
        settings.write_text(f"remote_url: {upstream.url}\nmirror_dir: {mirror}\nplatforms: [linux-64]\n")
        # the timer's run: quiet, so nothing at all when it went well
        sync = subprocess.run(sandboxed("cas-sync.service", [mirror, private_tmp], env),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert (sync.returncode, sync.stdout, sync.stderr) == (0, "", ""), sync.stderr
        assert mirror_problems(mirror / "pkgs", upstream.root, ("linux-64", "noarch")) == []
        assert {p.owner() for p in (mirror / "pkgs" / "noarch").iterdir()} == {"nobody"}

    # the server reads the mirror (read-only to it) and writes only its gzip cache
    extra = ("--host", "127.0.0.1", "--port", "0", "--workers", "1", "--gzip-cache", str(cache))
    argv = sandboxed("cas-server.service", [cache, private_tmp], env, extra)
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        match = re.search(r" at (http://\S+?)/? \(", line)
        assert match, line + server.stderr.read()
        url = match.group(1)
        request = urllib.request.Request(f"{url}/pkgs/noarch/repodata.json")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["info"]["subdir"] == "noarch"
        with urllib.request.urlopen(f"{url}/pkgs/linux-64/tool-1.0-0.conda", timeout=10) as response:
            assert response.read() == (mirror / "pkgs" / "linux-64" / "tool-1.0-0.conda").read_bytes()
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)  # what systemctl stop sends (KillSignal)
        assert server.wait(timeout=30) == 0
        assert time.monotonic() - started < float(service("cas-server.service")["TimeoutStopSec"][0])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not (mirror / ".cas" / "cache").exists()  # the mirror stayed as the sync left it
    access = server.stdout.read()
    assert 'GET /pkgs/linux-64/tool-1.0-0.conda HTTP/1.1" 200' in access  # to the journal
