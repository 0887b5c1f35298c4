"""A real nginx running the configuration `cas-server --nginx-config` prints, for the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from casconsole.serve.nginx import nginx_config

NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx on 127.0.0.1 with the printed configuration; `auth_port` is the cas-server it asks."""

    def __init__(self, mirror: Path, work: Path, private, auth_port: int, channel: str | None = "pkgs"):
        self.port = free_port()
        self.access_log = work / "nginx-access.log"
        self.error_log = work / "nginx-error.log"
        conf = nginx_config(
            mirror,
            "127.0.0.1",
            self.port,
            list(private),
            f"127.0.0.1:{auth_port}",
            access_log=str(self.access_log),
            error_log=str(self.error_log),
            pid=str(work / "nginx.pid"),
            channel=channel,
        )
        head = "daemon off;\n" + ("user root;\n" if os.geteuid() == 0 else "")
        (work / "nginx.conf").write_text(head + conf)
        self.proc = subprocess.Popen([NGINX, "-c", str(work / "nginx.conf"), "-e", str(self.error_log)])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError("nginx did not start: " + self.error_log.read_text()) from None
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(timeout=20)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
