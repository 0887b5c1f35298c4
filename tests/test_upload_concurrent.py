"""Uploads at the same time (issue 19, point 5): all of them land in the index, and a client
reading the repodata meanwhile only ever gets a whole index whose every package is in place."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import zstandard
from processes import wait_for
from test_server_support import PRIVATE, Server
from upload_support import PUBLIC, add_token, package, put_raw, status_of, upload_mirror

from casconsole.index.cache import CACHE_DIR, LOCK_FILE


def test_concurrent_uploads_to_one_subdir_all_land_while_readers_see_whole_indexes(tmp_path):
    mirror = upload_mirror(tmp_path / "mirror")
    token = add_token(mirror, PUBLIC)
    packages = [package(tmp_path / "dist", f"pkg{i:02d}", payload=os.urandom(20_000 + i)) for i in range(24)]
    # an existing index to start from: readers always have one to read
    seed = package(tmp_path / "seed", "seed")
    with Server(mirror, workers=2) as srv:
        url = f"{srv.url}/t/{token}/{PUBLIC}/linux-64"
        assert httpx.put(f"{url}/{seed.name}", content=seed.read_bytes()).status_code == 201
        folder = mirror / PUBLIC / "linux-64"
        seen: list[int] = []
        problems: list[str] = []
        stop = threading.Event()

        def read_while_uploading() -> None:
            with httpx.Client(base_url=srv.url) as client:
                while not stop.is_set():
                    for name in ("repodata.json", "repodata.json.zst"):
                        body = client.get(f"/{PUBLIC}/linux-64/{name}").content
                        if name.endswith(".zst"):
                            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                        try:
                            doc = json.loads(body)
                        except ValueError as exc:
                            problems.append(f"{name}: not whole JSON ({exc})")
                            continue
                        listed = doc["packages.conda"]
                        seen.append(len(listed))
                        for fn, record in listed.items():  # every listed package is in place, whole
                            data = (folder / fn).read_bytes()
                            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                                problems.append(f"{fn}: listed before its bytes were in place")

        reader = threading.Thread(target=read_while_uploading)
        reader.start()
        try:

            def upload(path):
                with open(path, "rb") as fh:
                    return httpx.put(f"{url}/{path.name}", content=fh.read(), timeout=60).status_code

            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(upload, packages))
        finally:
            stop.set()
            reader.join(timeout=30)
        assert statuses == [201] * len(packages)
        final = httpx.get(f"{srv.url}/{PUBLIC}/linux-64/repodata.json").json()["packages.conda"]
        assert set(final) == {p.name for p in packages} | {seed.name}
        for path in packages:
            assert final[path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert not problems, problems[:5]
        assert len(seen) > 10 and min(seen) >= 1
        assert not [p for p in folder.iterdir() if p.name.startswith(".upload-")]
        assert not [line for line in srv.stderr if "Traceback" in line or "internal error" in line]


def test_an_upload_waits_for_an_index_run_and_gives_up_after_the_upload_timeout(tmp_path):
    """The channel's index lock held (a long cas-index run): an upload waits for it, and is
    published once it is free; held past upload_timeout, the upload gets 503 and leaves nothing."""
    mirror = upload_mirror(tmp_path / "mirror")
    token = add_token(mirror, PUBLIC)
    first = package(tmp_path / "dist", "first")
    second = package(tmp_path / "dist", "second")
    (mirror / PUBLIC / "linux-64").mkdir(parents=True)
    (mirror / PUBLIC / CACHE_DIR).mkdir()
    with (
        Server(mirror, "--upload-timeout", "2", workers=1) as srv,
        open(mirror / PUBLIC / CACHE_DIR / LOCK_FILE, "a+") as lock,
    ):
        target = f"/t/{token}/{PUBLIC}/linux-64"
        fcntl.flock(lock, fcntl.LOCK_EX)
        threading.Timer(1.0, fcntl.flock, (lock, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        answer = put_raw(srv.port, f"{target}/{first.name}", first.read_bytes())
        assert status_of(answer) == 201 and time.monotonic() - started >= 0.9

        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            answer = put_raw(srv.port, f"{target}/{second.name}", second.read_bytes())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        assert status_of(answer) == 503 and b"another index run holds it" in answer
        assert b"Retry-After: 5" in answer
        names = {p.name for p in (mirror / PUBLIC / "linux-64").iterdir()}
        assert names == {first.name, "repodata.json", "repodata.json.zst"}


def test_staging_folders_of_a_killed_server_are_removed_at_the_next_start(tmp_path):
    mirror = upload_mirror(tmp_path / "mirror")
    folder = mirror / PRIVATE / "linux-64"
    stale = folder / ".upload-0123456789abcdef"
    fresh = folder / ".upload-fedcba9876543210"
    for staging in (stale, fresh):
        staging.mkdir(parents=True)
        (staging / "half-1.0-0.conda").write_bytes(b"half an upload")
    old = time.time() - 2 * 86400
    os.utime(stale / "half-1.0-0.conda", (old, old))
    os.utime(stale, (old, old))
    with Server(mirror, workers=1) as srv:
        pass
    assert not stale.exists() and fresh.exists()  # a running server's own are not touched
    assert wait_for(lambda: any("an upload cut off when a server stopped" in x for x in srv.stderr))
