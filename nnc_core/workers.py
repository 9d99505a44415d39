"""The thread pool that decoding shares: created once, on first use, with one worker per core.

The compiled decoder releases the GIL, so threads decode independent block rows and tensors
in parallel. Reusing one pool keeps the hand-off cheap for small tensors.
"""
import os
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None


def cores() -> int:
    return os.cpu_count() or 1


def shared_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="nnc-decode")
    return _pool
