"""Worker processes for compose: each takes one chunk of work at a time over a pipe of its own.

Not a multiprocessing.Pool: its workers share one task queue and its lock, and a worker killed while
it waits there (a service manager's SIGTERM reaches the whole process group) leaves the lock held,
so the Pool's terminate() waits for ever. Here no lock is shared: any worker may die at any moment,
and the parent hears of it from the process's sentinel.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import wait


def _serve(conn) -> None:
    # Ctrl-C in a terminal reaches every process of the group: the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            fn, chunk = conn.recv()
        except (EOFError, OSError):  # the parent closed its end (done, or stopped) or is gone
            return
        try:
            result = (True, [fn(item) for item in chunk])
        except Exception as e:  # the parent raises it
            result = (False, e)
        try:
            conn.send(result)
        except OSError:  # the parent stopped waiting for it
            return


class WorkerPool:
    """``workers`` spawned processes; ``map`` is the built-in map spread over them."""

    def __init__(self, workers: int):
        ctx = multiprocessing.get_context("spawn")
        self.workers = []
        for _ in range(workers):
            here, there = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(there,), daemon=True)
            process.start()
            there.close()
            self.workers.append((process, here))

    def map(self, fn, items, chunksize: int = 1):
        """Yield ``fn(item)`` for each of ``items``, in their order; a worker's exception is raised here."""
        items = list(items)
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        idle = [conn for _, conn in self.workers]
        running = {}  # a worker's pipe -> the chunk it works on
        done = {}
        sent = yielded = 0
        sentinels = {process.sentinel: process for process, _ in self.workers}
        while yielded < len(chunks):
            while idle and sent < len(chunks):
                conn = idle.pop()
                conn.send((fn, chunks[sent]))
                running[conn] = sent
                sent += 1
            for ready in wait([*running, *sentinels]):
                try:
                    if ready in sentinels:
                        raise EOFError
                    ok, value = ready.recv()
                except (EOFError, OSError):  # its process ended: its pipe closes as its sentinel fires
                    dead = next(p for p, conn in self.workers if ready in (p.sentinel, conn))
                    dead.join(1)
                    raise RuntimeError(f"a compose worker process (pid {dead.pid}) ended with exit code "
                                       f"{dead.exitcode}: killed, or out of memory? Try --workers 1") from None
                if not ok:
                    raise value
                done[running.pop(ready)] = value
                idle.append(ready)
            while yielded in done:
                yield from done.pop(yielded)
                yielded += 1

    def close(self, wait_s: float = 10) -> None:
        """Let each worker finish the chunk in hand and leave; end those that take longer."""
        for _, conn in self.workers:
            conn.close()
        for process, _ in self.workers:
            process.join(wait_s)
            if process.is_alive():
                process.kill()
                process.join()
