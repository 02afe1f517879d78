"""`run_blocking`: a model call (or any coroutine) from blocking code, with or without a running loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any

# The worker thread's name prefix, so code can tell it runs on such a throwaway thread.
RUN_THREAD_PREFIX = "distillery-run"


def run_blocking(make_coroutine: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to the end from blocking code, also where a loop already runs (a notebook
    cell): asyncio.run cannot nest, so then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=RUN_THREAD_PREFIX) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()
