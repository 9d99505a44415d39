"""Thread pools for coding NDUs concurrently.

The compiled core releases the GIL in its hot loops (trellis, uniform quantization,
param_opt pricing, arithmetic coding and decoding), so threads code independent tensors,
and block rows of one tensor, in parallel. Callers say how many threads they want
(``threads=``, default: all cores); a pool of that size is created on first use and
reused, which keeps the hand-off cheap for small tensors.

:func:`ordered_map` runs a function over an iterable on such a pool and yields the results
in input order, with a few items per thread in flight, so that memory stays at a few
tensors' working buffers whatever the model size. Results never depend on the thread
count: every item is coded on its own, from its own input only.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()
_cores: int | None = None


def cores() -> int:
    """Cores this process may run on (cached: asking the OS costs microseconds)."""
    global _cores
    if _cores is None:
        try:
            _cores = len(os.sched_getaffinity(0)) or 1
        except (AttributeError, OSError):
            _cores = os.cpu_count() or 1
    return _cores


def resolve_threads(threads) -> int:
    """The thread count to use: ``None`` (or 0) means all cores; otherwise a positive int."""
    if threads is None or (not isinstance(threads, bool) and threads == 0):
        return cores()
    if isinstance(threads, bool) or not hasattr(threads, "__index__"):
        raise TypeError(f"threads must be a positive integer or None, got {threads!r}")
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads}")
    return threads


def pool(threads: int) -> ThreadPoolExecutor:
    """The shared pool with ``threads`` workers (created once per size)."""
    threads = max(1, int(threads))
    executor = _pools.get(threads)
    if executor is None:
        with _lock:
            executor = _pools.get(threads)
            if executor is None:
                executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nnc")
                _pools[threads] = executor
    return executor


def shared_pool() -> ThreadPoolExecutor:
    """The pool with one worker per core."""
    return pool(cores())


def ordered_map(fn: Callable, items: Iterable, threads: int,
                window: int | None = None, weight: Callable | None = None) -> Iterator:
    """``fn(item)`` for every item, in order, computed on ``threads`` threads with at most
    ``window`` items (default ``4 * threads``) submitted but not yet yielded. The window is
    wider than the pool because results are yielded in order: with one item per thread,
    the small tensors behind a large one (a layer's bias and norms) finish at once and
    leave their threads idle until the large one is done, which serialises a ResNet.
    With ``weight`` (e.g. an item's element count), more than ``threads`` items are in
    flight only while their weights add up to at most ``threads`` times the heaviest item
    so far: small items fill the window, large ones hold one thread's share of memory each.
    Items are drawn from ``items`` in the calling thread. With one thread everything runs in the
    calling thread. An exception in ``fn`` is raised when its result is reached; items
    still pending are then cancelled (or, if running, awaited and discarded)."""
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    executor = pool(threads)
    limit = max(1, window if window is not None else 4 * threads)
    pending: deque = deque()             # (future, weight)
    in_flight, heaviest = 0, 0

    def too_heavy() -> bool:
        return weight is not None and len(pending) > threads and in_flight > threads * heaviest
    try:
        for item in items:
            w = weight(item) if weight is not None else 0
            heaviest = max(heaviest, w)
            pending.append((executor.submit(fn, item), w))
            in_flight += w
            del item                     # hold no input while the next one is read
            while pending and (len(pending) >= limit or too_heavy()):
                future, w = pending.popleft()
                in_flight -= w
                yield future.result()
        while pending:
            yield pending.popleft()[0].result()
    finally:
        for future, _ in pending:
            future.cancel()
        for future, _ in pending:
            if not future.cancelled():
                try:
                    future.result()
                except BaseException:    # already failing or abandoned: nothing to report
                    pass
