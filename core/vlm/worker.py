"""All model computation on one thread.

On CPU, torch's OpenMP runtime keeps a team of worker threads per calling thread. Measured on a 2-core
machine (SmolVLM-256M size, int8 engine): decoding ran at 24-27 tokens/s while a single thread did all
torch work, and at 13-15 tokens/s in every thread, the first one included, once a second thread had
run torch operations. A web server calls in from many threads, so loading, encoding and generation
all go through this one thread instead. It is a daemon: stopping the app does not wait for an answer.
It starts at the first job, and again in a process forked from one that had it (a fork copies only
the forking thread): importing this module starts nothing.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

_jobs: queue.SimpleQueue[tuple[Future, Callable, tuple, dict]] = queue.SimpleQueue()


def _run(future: Future, fn: Callable, args: tuple, kwargs: dict) -> None:
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as exc:  # handed to whoever waits on the future
        future.set_exception(exc)


def _run_jobs() -> None:
    while True:
        _run(*_jobs.get())


_thread: threading.Thread | None = None
_starting = threading.Lock()


def _torch_thread() -> threading.Thread:
    global _thread
    with _starting:
        if _thread is None or not _thread.is_alive():  # never started, or this process was forked
            _thread = threading.Thread(target=_run_jobs, name="loupe-torch", daemon=True)
            _thread.start()
        return _thread


def _forget_parents_jobs() -> None:
    global _jobs, _starting
    _jobs, _starting = queue.SimpleQueue(), threading.Lock()  # no one in this process waits on those


os.register_at_fork(after_in_child=_forget_parents_jobs)


def submit(fn: Callable[..., T], *args: object, **kwargs: object) -> Future[T]:
    """Run ``fn`` on the torch thread (at once if already there); jobs run one after another."""
    future: Future[T] = Future()
    if threading.current_thread() is _torch_thread():
        _run(future, fn, args, kwargs)
    else:
        _jobs.put((future, fn, args, kwargs))
    return future


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``fn`` on the torch thread and wait for its result."""
    return submit(fn, *args, **kwargs).result()
