"""All model computation on one thread.

On CPU, torch's OpenMP runtime keeps a team of worker threads per calling thread. Measured on a 2-core
machine (SmolVLM-256M size, int8 engine): decoding ran at 24-27 tokens/s while a single thread did all
torch work, and at 14-15 tokens/s in every thread, the first one included, once a second thread had
run torch operations. A web server calls in from many threads, so loading, encoding and generation
all go through this one thread instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loupe-torch")
_torch_thread: list[threading.Thread] = []


def _mark() -> None:
    _torch_thread.append(threading.current_thread())


_executor.submit(_mark).result()


def on_torch_thread() -> bool:
    return threading.current_thread() is _torch_thread[0]


def submit(fn: Callable[..., T], *args: object, **kwargs: object) -> Future[T]:
    """Run ``fn`` on the torch thread (at once if already there); jobs run one after another."""
    if on_torch_thread():
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            done.set_exception(exc)
        return done
    return _executor.submit(fn, *args, **kwargs)


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``fn`` on the torch thread and wait for its result."""
    return submit(fn, *args, **kwargs).result()
