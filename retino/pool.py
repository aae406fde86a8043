"""An ordered process pool with a bounded number of jobs in flight.

synthesize draws images and downscale-images decodes photos with it: results come
back in job order, and memory stays flat however many jobs there are.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def default_workers(workers: int) -> int:
    """``0`` means one worker per available CPU core."""
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_map(function: Callable, jobs: Iterable, workers: int) -> Iterator:
    """``function`` over ``jobs`` in worker processes, results in order.

    At most a few jobs per worker are in flight, so memory does not grow with the
    number of jobs (``Executor.map`` would submit them all at once).
    """
    window = 4 * workers
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(function, job))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
