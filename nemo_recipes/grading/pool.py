"""Map a function over items in worker processes that can be killed one at a time.

math-verify needs processes, not threads (its timeouts use SIGALRM), and its own timeouts cannot interrupt C code
such as a huge integer power, so a worker can still hang. concurrent.futures cannot kill one stuck worker (it breaks
the whole pool), hence this small pool: each worker gets a chunk of items and reports after each one; a worker
silent for longer than the item deadline, or dead, is killed and replaced, the item it was on gets `on_failure`,
and the rest of its chunk goes back in the queue.

Workers fork from a forkserver rather than from the caller, which may be running threads (tqdm's monitor); with
`preload`, that server imports and warms the heavy modules once, so that every worker, replacements included,
starts ready in milliseconds. Items may come from a generator that reads the input: the pool pulls them as workers
free up, so reading, warming up and working overlap.
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

_READY = "ready"
_POLL_S = 0.5
_MAX_FAILED_STARTS = 3
_QUEUE_AHEAD_BYTES = 16 * 1024  # well inside a socketpair's buffer


@dataclass
class _Worker:
    process: Any
    conn: Connection
    inflight: deque = field(default_factory=deque)  # (index, item) pairs sent and not yet answered
    ready: bool = False
    last_heard: float = field(default_factory=time.monotonic)


class _Raised:
    """What a worker sends back when `func` raised: the parent turns it into on_failure's result."""

    def __init__(self, message: str):
        self.message = message


class WorkerPool:
    """`workers` processes computing func(item), each item within `item_deadline_s` or on_failure(item, reason).

    `func` and `initializer` must be picklable (module-level functions or partials of them). `preload` names modules
    the forkserver imports before forking anyone; like sys.path, it only reaches the forkserver if this process
    has not started one yet.
    """

    def __init__(
        self,
        func: Callable[[Any], Any],
        *,
        workers: int,
        on_failure: Callable[[Any, str], Any],
        item_deadline_s: float,
        initializer: Callable[[], None] | None = None,
        preload: Sequence[str] = (),
        startup_deadline_s: float = 120.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._func, self._initializer, self._on_failure = func, initializer, on_failure
        self._item_deadline_s, self._startup_deadline_s = item_deadline_s, startup_deadline_s
        self._context = multiprocessing.get_context("forkserver")
        # Never empty: only with a preload list does the forkserver start with this process's sys.path, so that
        # workers can import whatever module `func` comes from.
        self._context.set_forkserver_preload([__name__, *preload])
        self._failed_starts = 0
        self._size = workers
        self._workers: list[_Worker] = []  # filled by the starter thread, read by map
        self._start_error: BaseException | None = None
        # The first start waits for the forkserver to import `preload` (a second for math-verify): a thread does
        # it, so that the caller goes on producing items meanwhile.
        self._starter = threading.Thread(target=self._start_workers, name="worker-pool-start", daemon=True)
        self._starter.start()

    def _start_workers(self) -> None:
        try:
            for _ in range(self._size):
                self._workers.append(self._start_worker())
        except BaseException as error:  # re-raised by map, in the caller's thread
            self._start_error = error

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._starter.join()
        for worker in self._workers:
            _stop(worker, graceful=True)
        self._workers = []

    def map(
        self,
        items: Iterable,
        *,
        chunk_size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> list:
        """[func(item) for item in items], in order; on_failure(item, reason) stands in for an unfinished item.

        `items` may be lazy: it is consumed as workers free up, so producing the items (reading a file) overlaps
        their processing. A worker may hold a second chunk behind its current one when that chunk is small enough
        to sit in the pipe's buffer: a send must never block while a worker needs watching.
        """
        if chunk_size is None:
            per_worker = len(items) // (self._size * 8) if isinstance(items, Sized) else 32
            chunk_size = max(1, min(64, per_worker))
        source = iter(items)
        pulled: list = []  # every item taken from `items`, by index
        results: list = []
        queued: deque = deque()  # (chunk, pickled chunk) ready to send
        unsettled = 0
        exhausted = False
        pool = self._workers

        def build_chunk() -> None:
            nonlocal unsettled, exhausted
            chunk = [(len(pulled) + offset, item) for offset, item in enumerate(itertools.islice(source, chunk_size))]
            exhausted = len(chunk) < chunk_size
            if chunk:
                pulled.extend(item for _, item in chunk)
                results.extend([None] * len(chunk))
                unsettled += len(chunk)
                queued.append(_packed(chunk))

        def settle(index: int, result: Any) -> None:
            nonlocal unsettled
            results[index] = result
            unsettled -= 1
            if on_progress is not None:
                on_progress(1)

        def replace(slot: int, reason: str) -> None:
            worker = pool[slot]
            _stop(worker)
            if not worker.ready:
                self._failed_starts += 1
                if self._failed_starts >= _MAX_FAILED_STARTS:
                    raise RuntimeError(f"worker processes fail to start ({reason}); see their stderr above")
            if worker.inflight:
                index, item = worker.inflight.popleft()
                settle(index, self._on_failure(item, reason))
                if worker.inflight:
                    queued.appendleft(_packed(list(worker.inflight)))
            pool[slot] = self._start_worker()

        def dispatch() -> None:
            for slot, worker in enumerate(pool):
                while worker.ready:
                    if not queued and not exhausted:
                        build_chunk()
                    if not queued:
                        return
                    chunk, payload = queued[0]
                    if worker.inflight and (len(worker.inflight) > chunk_size or len(payload) > _QUEUE_AHEAD_BYTES):
                        break
                    queued.popleft()
                    try:
                        worker.conn.send_bytes(payload)
                    except OSError:  # it died since we last heard from it
                        queued.appendleft((chunk, payload))
                        try:
                            _drain(worker, settle)  # what it answered before dying still counts
                        except (EOFError, OSError):
                            pass
                        worker.process.join(timeout=1.0)
                        replace(slot, f"worker process died (exit code {worker.process.exitcode})")
                        break
                    if not worker.inflight:
                        worker.last_heard = time.monotonic()
                    worker.inflight.extend(chunk)

        while True:
            if self._start_error is not None:
                raise RuntimeError(f"could not start worker processes: {self._start_error}") from self._start_error
            dispatch()
            if exhausted and not queued and not unsettled:
                break
            # Read ahead while workers are busy or starting, up to two chunks per worker.
            read_ahead = not exhausted and len(queued) < 2 * self._size
            if read_ahead:
                build_chunk()
            waiting = [worker for worker in pool if worker.inflight or not worker.ready]
            if waiting:
                readable = set(wait([worker.conn for worker in waiting], timeout=0 if read_ahead else _POLL_S))
            else:  # no worker started yet
                readable = set()
                if not read_ahead:
                    self._starter.join(timeout=0.05)
            now = time.monotonic()
            for slot, worker in enumerate(pool):
                if worker.conn in readable:
                    try:
                        _drain(worker, settle)
                    except (EOFError, OSError):
                        worker.process.join(timeout=1.0)
                        replace(slot, f"worker process died (exit code {worker.process.exitcode})")
                        continue
                    worker.last_heard = now
                deadline = self._item_deadline_s if worker.ready else self._startup_deadline_s
                if (worker.inflight or not worker.ready) and now - worker.last_heard > deadline:
                    replace(slot, f"no answer within {deadline:g} s")
        return [
            self._on_failure(pulled[index], result.message) if isinstance(result, _Raised) else result
            for index, result in enumerate(results)
        ]

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(child_end, self._func, self._initializer), daemon=True
        )
        process.start()
        child_end.close()
        return _Worker(process=process, conn=parent_end)


def map_in_workers(func: Callable[[Any], Any], items: Sequence, *, workers: int, **options) -> list:
    """One-shot WorkerPool(func, workers=..., **options).map(items); chunk_size and on_progress go to map."""
    map_options = {key: options.pop(key) for key in ("chunk_size", "on_progress") if key in options}
    if not items:
        return []
    with WorkerPool(func, workers=min(workers, len(items)), **options) as pool:
        return pool.map(items, **map_options)


def _packed(chunk: list) -> tuple[list, memoryview]:
    return chunk, ForkingPickler.dumps(chunk)


def _drain(worker: _Worker, settle: Callable[[int, Any], None]) -> None:
    while worker.conn.poll():
        message = worker.conn.recv()
        if message == _READY:
            worker.ready = True
            continue
        index, result = message
        expected_index, _ = worker.inflight.popleft()
        assert index == expected_index, "workers answer their chunk in order"
        settle(index, result)


def _stop(worker: _Worker, graceful: bool = False) -> None:
    if graceful and worker.process.is_alive():
        try:
            worker.conn.send(None)
        except OSError:
            pass
        worker.process.join(timeout=1.0)
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join()
    worker.conn.close()


def _serve(conn: Connection, func: Callable[[Any], Any], initializer: Callable[[], None] | None) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()
    conn.send(_READY)
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for index, item in chunk:
            try:
                result = func(item)
            except Exception as error:  # reported, not fatal: the other items of the chunk still get graded
                result = _Raised(f"{type(error).__name__}: {error}")
            conn.send((index, result))
