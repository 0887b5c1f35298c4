"""cas-server under stress: rewrites while serving, slow clients, SIGTERM."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest
from processes import children, wait_for
from test_server_support import Server, make_mirror

from casconsole.conda.repodata import write_repodata
from casconsole.fsutil import atomic_write_bytes
from casconsole.procutil import pid_alive


def _version(n: int) -> dict:
    # versions differ in size, so a mix of two would not parse or would fail the checksum
    packages = {
        f"p{i}-{n}.0-0.tar.bz2": {"name": f"p{i}", "version": f"{n}.0", "depends": []}
        for i in range(200 + (n % 7) * 150)
    }
    digest = hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest()
    return {"info": {"subdir": "linux-64"}, "packages": packages, "digest": digest, "n": n}


def _check(doc: dict) -> None:
    packages = doc["packages"]
    assert hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest() == doc["digest"]


@pytest.mark.slow
def test_rewriting_repodata_while_serving_never_gives_a_partial_file(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    sub = root / "pkgs" / "linux-64"
    write_repodata(sub, _version(0))
    stop = threading.Event()
    written = [0]
    problems: list[str] = []

    def writer() -> None:  # what cas-index and cas-sync do: json + .zst, each atomically
        n = 1
        while not stop.is_set():
            write_repodata(sub, _version(n))
            written[0] = n
            n += 1

    def reader(url: str, headers: dict) -> int:
        seen = 0
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                r = c.get(url, headers=headers)
                try:
                    assert r.status_code == 200, r.status_code
                    assert int(r.headers["content-length"]) == len(r.content) or "gzip" in r.headers.get(
                        "content-encoding", ""
                    )
                    _check(r.json())
                except (AssertionError, ValueError, KeyError) as exc:
                    problems.append(f"{headers}: {exc!r}")
                seen += 1
        return seen

    with Server(root) as srv:
        url = f"{srv.url}/pkgs/linux-64/repodata.json"
        counts: list[int] = []
        readers = [
            threading.Thread(target=lambda h=h: counts.append(reader(url, h)))
            for h in ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip"}) * 2
        ]
        w = threading.Thread(target=writer)
        w.start()
        for t in readers:
            t.start()
        time.sleep(4)
        stop.set()
        w.join()
        for t in readers:
            t.join()
    assert not problems, problems[:5]
    assert written[0] > 20  # the file really was rewritten many times
    assert sum(counts) > 100


@pytest.mark.slow
def test_slow_clients_do_not_starve_a_normal_client(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    with Server(root) as srv:
        held = []
        try:
            for i in range(200):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                if i % 2:  # half send headers one byte at a time, never finishing
                    s.sendall(b"GET /pkgs/linux-64/repodata.json HTTP/1.1\r\nHo")
                else:  # half ask for a 3 MB package and never read it
                    s.sendall(b"GET /pkgs/linux-64/big-1.0-0.conda HTTP/1.1\r\nHost: t\r\n\r\n")
                held.append(s)
            for s in held[1::2]:
                s.sendall(b"s")
            start = time.monotonic()
            with httpx.Client(base_url=srv.url, timeout=5) as c:
                for _ in range(20):
                    r = c.get("/pkgs/linux-64/repodata.json", headers={"Accept-Encoding": "identity"})
                    assert r.status_code == 200
                    assert r.content == (root / "pkgs/linux-64/repodata.json").read_bytes()
            assert time.monotonic() - start < 5
        finally:
            for s in held:
                s.close()


@pytest.mark.slow
def test_sigterm_finishes_the_response_in_flight_then_exits_0(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    big = root / "pkgs" / "linux-64" / "huge-1.0-0.conda"
    data = hashlib.sha256(b"seed").digest() * (48 * 1024 * 1024 // 32)  # more than socket buffers
    big.write_bytes(data)
    with Server(root, "--grace", "30") as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /pkgs/linux-64/huge-1.0-0.conda HTTP/1.1\r\nHost: t\r\n\r\n")
        received = s.recv(1024 * 1024)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.proc.poll() is None  # still sending
        # no new connections once it stops: refused at once, not left hanging
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).recv(1)
        while chunk := s.recv(1024 * 1024):
            received += chunk
        s.close()
        body = received.partition(b"\r\n\r\n")[2]
        assert body == data  # whole, and then the server closed the connection
        assert srv.proc.wait(timeout=30) == 0
        assert any("stopped" in line for line in srv.stderr)
        lines = srv.log_lines(1)
        assert any("huge-1.0-0.conda" in line and f" 200 {len(received)} " in line for line in lines)


def test_sigint_and_sigterm_exit_cleanly_when_idle(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    for sig, workers in ((signal.SIGTERM, 2), (signal.SIGINT, 2), (signal.SIGTERM, 1)):
        with Server(root, workers=workers) as srv:
            assert httpx.get(f"{srv.url}/pkgs/noarch/repodata.json").status_code == 200
            start = time.monotonic()
            assert srv.stop(sig) == 0
            assert time.monotonic() - start < 5
            assert not any("Traceback" in line for line in srv.stderr)


def test_a_gzip_body_is_whole_when_read_through_a_slow_link(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    with Server(root) as srv:
        url = f"{srv.url}/pkgs/linux-64/repodata.json"
        for _ in range(100):
            r = httpx.get(url, headers={"Accept-Encoding": "gzip"})
            if r.headers.get("content-encoding") == "gzip":
                break
            time.sleep(0.05)
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(
            b"GET /pkgs/linux-64/repodata.json HTTP/1.1\r\nHost: t\r\n"
            b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(4096):
            data += chunk
            time.sleep(0.001)
        body = data.partition(b"\r\n\r\n")[2]
        assert gzip.decompress(body) == (root / "pkgs/linux-64/repodata.json").read_bytes()


def test_atomic_write_of_a_small_file_is_seen_whole(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    f = root / "pkgs" / "noarch" / "repodata.json"
    with Server(root, workers=1) as srv, httpx.Client(base_url=srv.url) as c:
        for n in range(50):
            atomic_write_bytes(f, json.dumps({"packages": {}, "n": n, "pad": "x" * n}).encode())
            assert c.get("/pkgs/noarch/repodata.json").json()["n"] == n


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_workers_do_not_outlive_a_killed_parent(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    with Server(root, workers=2) as srv:
        workers = wait_for(lambda: len(children(srv.proc.pid)) == 2 and children(srv.proc.pid))
        assert workers
        srv.proc.kill()
        srv.proc.wait()
        assert wait_for(lambda: not any(pid_alive(w) for w in workers), timeout=10)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_a_worker_that_dies_is_replaced(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    with Server(root, workers=2) as srv:
        workers = wait_for(lambda: len(children(srv.proc.pid)) == 2 and children(srv.proc.pid))
        os.kill(workers[0], signal.SIGKILL)
        assert wait_for(lambda: len(children(srv.proc.pid)) == 2 and workers[0] not in children(srv.proc.pid))
        for _ in range(40):  # new connections each time, spread over both sockets
            r = httpx.get(f"{srv.url}/pkgs/noarch/repodata.json", timeout=5)
            assert r.status_code == 200
        assert srv.stop() == 0
    assert any("starting a new one" in line for line in srv.stderr)


@pytest.mark.slow
def test_cas_index_rewriting_a_channel_while_serving_never_gives_a_partial_repodata(tmp_path):
    from casconsole.conda.archive import PackageSpec, build_package
    from casconsole.index.channel import index_channel

    root = make_mirror(tmp_path / "mirror")
    channel = root / "team-pkgs"
    for i in range(30):
        build_package(channel / "noarch", PackageSpec(f"base{i}", "1.0", subdir="noarch"), ".conda")
    index_channel(channel, workers=1)
    stop = threading.Event()
    rounds = [0]
    problems: list[str] = []

    def indexer() -> None:
        n = 0
        while not stop.is_set():
            path = build_package(channel / "noarch", PackageSpec("moving", f"{n}.0", subdir="noarch"))
            index_channel(channel, workers=1)
            path.unlink()
            n += 1
            rounds[0] = n

    def reader(headers: dict) -> None:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            while not stop.is_set():
                r = c.get("/team-pkgs/noarch/repodata.json", headers=headers)
                try:
                    doc = r.json()
                    assert r.status_code == 200
                    assert sum(len(doc[k]) for k in ("packages", "packages.conda")) in (30, 31)
                except (AssertionError, ValueError, KeyError) as exc:
                    problems.append(repr(exc))

    with Server(root) as srv:
        threads = [threading.Thread(target=indexer)] + [
            threading.Thread(target=reader, args=(h,))
            for h in ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip"})
        ]
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:5]
    assert rounds[0] > 5
