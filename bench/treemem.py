"""The memory a command uses, with its children: a tool of several processes (cas-sync's
download workers, a dry run split in two) counted together, not by its largest process alone."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def tree_memory(root: int) -> int:
    """Bytes in use by process `root` and all its descendants now: their resident sets, and the
    memory files they hold open (a split dry run's child writes its part of the report into one,
    which no RSS counts)."""
    total, todo, memfds = 0, [root], {}
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                    st = os.stat(f"/proc/{pid}/fd/{fd}")
                    memfds[st.st_dev, st.st_ino] = st.st_size
        except OSError:
            continue  # gone meanwhile
    return total + sum(memfds.values())


class PeakMemory:
    """The largest `tree_memory` of a process seen while it runs, sampled every `interval` s."""

    def __init__(self, pid: int, interval: float):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, tree_memory(self.pid))

    def stop(self) -> int:
        """The peak in bytes, sampling over."""
        self._done.set()
        self._thread.join()
        return self.peak
