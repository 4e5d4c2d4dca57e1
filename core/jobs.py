"""Heavy work in worker processes under OS limits, with a bounded queue per user, progress and cancellation.

Each job runs in a worker process of a pebble pool started from a fork server; a worker is replaced after
``JOBS_PER_WORKER`` jobs, or when a job kills it. A job's CPU time (``RLIMIT_CPU``) and the address space it
adds (``RLIMIT_AS``) are capped, core dumps are off (a crashed decoder must not write patient pixels to
disk), and a wall-clock timeout ends it. A bomb kills its own job, never the server or another job.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from .budgets import Budgets, describe
from .errors import LoupeError

log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[int, int], None]
POLL_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
MEMORY_EXIT = 86  # a worker's exit code after its job ran out of memory
JOBS_PER_WORKER = 50  # a worker is replaced after this many jobs (whatever they left behind goes with it)
SOCKET_BASE_MAX = 60  # longest temporary folder the fork server's socket path fits under (+ pymp-…/listener-…)
WALL_FACTOR = 3  # wall-clock limit = this × the CPU limit: a job may wait on disk, never forever

# Set in each worker process by _start_worker.
_events: Any = None
_job_id: int | None = None


class JobFailed(LoupeError):
    """A job ended without a result: over its time or memory limit, or its worker died."""


class JobCancelled(LoupeError):
    """The user cancelled the job (or closed the page) before it finished."""


class QueueFull(LoupeError):
    """The user already has as many jobs as the budget allows."""


@dataclass
class JobStats:
    peak_rss_bytes: int  # of the worker process while it ran the job
    cpu_seconds: float
    start_rss_bytes: int = 0  # the worker's resident memory when the job began (what earlier jobs left loaded)

    @property
    def grown_bytes(self) -> int:
        """What the job itself added at its peak, whatever the worker held before."""
        return max(0, self.peak_rss_bytes - self.start_rss_bytes)


def _virtual_size() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _start_worker(events: Any, server_pid: int) -> None:
    global _events
    _events = events
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The worker's parent is the fork server, which exits with the server: a running job goes with them.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # A worker forked while the server was dying misses that signal: it also watches the server itself.
    threading.Thread(target=_end_with, args=(server_pid,), name="loupe-server-watch", daemon=True).start()


def _end_with(server_pid: int) -> None:
    while True:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid now belongs to another user's process: the server is gone
            os._exit(1)
        time.sleep(1)


def _limit_job(memory_bytes: int, cpu_seconds: int) -> None:
    """Budgets for the job about to run, on top of what this worker has used so far (workers are reused, so
    its warm state — OCR models, decoders — is loaded once; the hard limits stay open for the next job)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _set_soft(resource.RLIMIT_CPU, int(usage.ru_utime + usage.ru_stime) + cpu_seconds)
    # Address space counts mappings the imports already made; the budget is what the job adds to them.
    _set_soft(resource.RLIMIT_AS, _virtual_size() + memory_bytes)
    with open("/proc/self/clear_refs", "w") as refs:  # the peak RSS reported is this job's (Linux: "5" resets it)
        refs.write("5")


def _set_soft(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    resource.setrlimit(kind, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _reset_peak_rss() -> None:
    """Start the process's peak resident memory (VmHWM) afresh, so a job's stats are its own, not the worker's
    largest job so far (Linux >= 4.0; elsewhere the lifetime peak stays)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def report_progress(done: int, total: int) -> None:
    """Tell the waiting page how far the job is (call from inside a job; a no-op elsewhere)."""
    if _events is not None and _job_id is not None:
        _events.put((_job_id, done, total))


def _run_job(job_id: int, memory_bytes: int, cpu_seconds: int, fn: Callable[..., T],
             args: tuple, prepare: Callable[[], None] | None) -> tuple[T, JobStats]:
    global _job_id
    _job_id = job_id
    _events.put((job_id, -1, 0))  # started
    before = resource.getrusage(resource.RUSAGE_SELF)
    _reset_peak_rss()
    start_rss = _peak_rss()  # just reset: the resident memory now
    _limit_job(memory_bytes, cpu_seconds)
    try:
        if prepare is not None:
            prepare()
        result: Any = fn(*args)
    except MemoryError:
        os._exit(MEMORY_EXIT)  # the worker's heap may be in pieces: it ends, the pool starts a fresh one
    except LoupeError as exc:  # a refusal: it goes back with what reaching it cost
        result = _Refused(exc)
    finally:
        _set_soft(resource.RLIMIT_AS, resource.RLIM_INFINITY)  # the next job of this worker gets its own budget
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result, JobStats(_peak_rss(), cpu, start_rss)


@dataclass
class _Refused:
    error: LoupeError


@dataclass
class _Job:
    id: int
    owner: str
    started: bool = False
    latest: tuple[int, int] | None = None  # the newest (done, total) the job reported
    submitted: bool = False  # handed to the pool (its owner's turn came)


class _Pool:
    """A worker pool and the relay of its workers' progress events; shared by runners with the same limits."""

    def __init__(self, workers: int, preload: Sequence[str]) -> None:
        _socket_folder_that_fits()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        self.events = context.SimpleQueue()
        self.pool = ProcessPool(max_workers=workers, max_tasks=JOBS_PER_WORKER, context=context,
                                initializer=_start_worker, initargs=(self.events, os.getpid()))
        threading.Thread(target=self._relay, name="loupe-job-events", daemon=True).start()

    def _relay(self) -> None:
        while True:
            try:
                job_id, done, total = self.events.get()
            except (EOFError, OSError):
                return
            job = _jobs.get(job_id)
            if job is None:
                continue
            if done < 0:
                job.started = True
            else:  # handed on by the waiting caller's own thread (Gradio's progress lives in its context)
                job.latest = (done, total)


def _socket_folder_that_fits() -> None:
    """Keep the fork server's socket path under the AF_UNIX limit (107 bytes).

    multiprocessing makes its socket folder (``pymp-…``) in the temporary folder once per process; under a deep
    LOUPE_HOME (``…/tmp/port-7860``) the socket's path was too long and every job failed with BrokenProcessPool.
    Where the temporary folder is that deep, the socket folder goes to the system's (mode 0700; it holds the
    socket only). Workers still get TMPDIR, so their files stay in LOUPE_HOME.
    """
    from multiprocessing import util

    configured = tempfile.tempdir
    if len(tempfile.gettempdir()) <= SOCKET_BASE_MAX or not os.access("/tmp", os.W_OK):
        return
    try:
        tempfile.tempdir = "/tmp"  # noqa: S108 - the socket's folder only: no data goes there
        util.get_temp_dir()  # made now and kept for this process
    finally:
        tempfile.tempdir = configured


_pools: dict[tuple, _Pool] = {}
_pools_lock = threading.Lock()
_jobs: dict[int, _Job] = {}  # every job of this process, queued or running, by id
_ids = itertools.count(1)
_finished: Counter[str] = Counter()  # jobs of this process that ended, by outcome (for /metrics)
_finished_lock = threading.Lock()


def job_counts() -> tuple[int, int]:
    """(running, queued) jobs of this process now: started in a worker, or still waiting for one."""
    jobs = list(_jobs.values())
    running = sum(1 for job in jobs if job.started)
    return running, len(jobs) - running


def finished_counts() -> dict[str, int]:
    """Jobs of this process that ended, by outcome: ok, refused, failed or cancelled."""
    with _finished_lock:
        return dict(_finished)


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, JobCancelled):
        return "cancelled"
    if isinstance(exc, LoupeError) and not isinstance(exc, JobFailed):
        return "refused"  # the budgets said no (the worker's LoupeError, passed on)
    return "failed"


def close_pools() -> None:
    """Stop every worker pool (server shutdown, end of a CLI run); running jobs are ended."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for entry in pools:
        entry.pool.stop()
        entry.pool.join(timeout=5)


atexit.register(close_pools)


class JobRunner:
    """Runs picklable top-level functions in worker processes for one server (or CLI run).

    Each runner keeps its own per-user bookkeeping; the pools are shared within the process.
    """

    def __init__(self, budgets: Budgets, preload: Sequence[str] = (),
                 prepare: Callable[[], None] | None = None) -> None:
        """``prepare``: a picklable call each worker makes before each of this runner's jobs (e.g. taking in
        the data sources' credentials as they are now)."""
        self.budgets = budgets
        self._preload = tuple(preload)
        self._prepare = prepare
        self._lock = threading.Lock()
        self._per_owner: Counter[str] = Counter()
        self._turns: dict[str, threading.Semaphore] = {}  # per user: jobs they may have in the pool at once

    def _pool(self) -> ProcessPool:
        b = self.budgets
        key = (b.workers, self._preload)
        with _pools_lock:
            if key not in _pools:
                _pools[key] = _Pool(b.workers, self._preload)
            return _pools[key].pool

    # -- jobs ----------------------------------------------------------------------------------
    def warm(self) -> None:
        """Start the fork server and a worker now (in the background), so the first upload does not wait for them."""
        def first() -> None:
            with contextlib.suppress(LoupeError):
                self.run("", "Starting a worker", os.getpid)  # "" is no user name
        threading.Thread(target=first, name="loupe-job-warmup", daemon=True).start()

    def position(self, job: _Job) -> int:
        """Jobs ahead of ``job``: those queued for a worker before it, the owner's own earlier jobs, and one
        running job when every worker is busy (0: it is about to start)."""
        others = [o for o in list(_jobs.values()) if o.id != job.id]
        queued = sum(1 for o in others if o.id < job.id and o.submitted and not o.started)
        own = sum(1 for o in others if o.id < job.id and o.owner == job.owner and (o.started or not o.submitted))
        busy = not own and sum(1 for o in others if o.started) >= self.budgets.workers
        return queued + own + int(busy)

    def run(self, owner: str, label: str, fn: Callable[..., T], args: tuple = (), *,
            progress: Progress | None = None, waiting: Callable[[int], None] | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> T:
        """Run ``fn(*args)`` in a worker for ``owner`` and return its result.

        ``label`` names the work in messages ("Reading the file"). ``fn`` may call :func:`report_progress`;
        ``progress(done, total)`` receives it here. ``waiting(position)`` is called while the job waits
        for a worker. Errors a user can act on (LoupeError) come back as they were raised in the worker.
        """
        result, _ = self.run_with_stats(owner, label, fn, args, progress=progress, waiting=waiting,
                                        cancelled=cancelled)
        return result

    def run_with_stats(self, owner: str, label: str, fn: Callable[..., T], args: tuple = (), *,
                       progress: Progress | None = None, waiting: Callable[[int], None] | None = None,
                       cancelled: Callable[[], bool] = lambda: False) -> tuple[T, JobStats]:
        pool = self._pool()
        with self._lock:
            cap = self.budgets.jobs_per_user
            if self._per_owner[owner] >= cap:
                raise QueueFull(f"You already have {cap} jobs waiting or running; wait for one to finish "
                                "(an administrator can raise LOUPE_JOBS_PER_USER).")
            job = _Job(next(_ids), owner)
            _jobs[job.id] = job
            self._per_owner[owner] += 1
            turn = self._turns.setdefault(owner, threading.Semaphore(max(1, self.budgets.workers // 2)))
        wall = self.budgets.job_seconds * WALL_FACTOR
        shown, reported = None, None
        holding = False
        try:
            # One user holds at most half the workers: another user's upload never waits behind all of theirs.
            while not (holding := turn.acquire(timeout=POLL_SECONDS)):
                if cancelled():
                    raise JobCancelled(f"{label}: cancelled.")
                if waiting is not None and (place := self.position(job)) != shown:
                    shown = place
                    waiting(place)
            job.submitted = True
            future = pool.schedule(_run_job, (job.id, self.budgets.job_memory_bytes, self.budgets.job_seconds,
                                              fn, args, self._prepare), timeout=wall)
            while True:
                try:
                    result, stats = future.result(timeout=POLL_SECONDS)
                except FutureTimeout:
                    if not future.done():
                        if cancelled():
                            future.cancel()
                            raise JobCancelled(f"{label}: cancelled.") from None
                        if waiting is not None and not job.started and (place := self.position(job)) != shown:
                            shown = place
                            waiting(place)
                        if progress is not None and job.latest is not None and job.latest != reported:
                            reported = job.latest
                            progress(*reported)
                        continue
                    raise JobFailed(f"{label} took longer than {wall:,} s and was stopped "
                                    "(an administrator can raise LOUPE_JOB_SECONDS).") from None
                if progress is not None and job.latest is not None and job.latest != reported:
                    progress(*job.latest)  # the last step, reported just before the result came
                if isinstance(result, _Refused):
                    result.error.job_stats = stats  # what the refusal cost the worker (benchmarks, tests)
                    raise result.error
                return result, stats
        except CancelledError:
            raise JobCancelled(f"{label}: cancelled.") from None
        except ProcessExpired as exc:
            raise JobFailed(self._death(label, exc.exitcode)) from None
        except LoupeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker's own bug: say so without its text (may quote data)
            log.warning("job %s failed: %s", label, type(exc).__name__)
            raise JobFailed(f"{label} failed unexpectedly ({type(exc).__name__}); the file was not kept.") from None
        finally:
            if holding:
                turn.release()
            with _finished_lock:
                _finished[_outcome(sys.exc_info()[1])] += 1  # the exception on its way out, if any
            with self._lock:
                _jobs.pop(job.id, None)
                self._per_owner[owner] -= 1
                if self._per_owner[owner] <= 0:
                    del self._per_owner[owner]

    def _out_of_memory(self, label: str) -> str:
        limit = describe("job_memory_bytes", self.budgets.job_memory_bytes)
        return (f"{label} needed more than {limit} of memory and was stopped "
                "(an administrator can raise LOUPE_JOB_MEMORY_BYTES).")

    def _death(self, label: str, exitcode: int | None) -> str:
        if exitcode == MEMORY_EXIT:
            return self._out_of_memory(label)
        if exitcode == -signal.SIGXCPU:
            return (f"{label} used more than {self.budgets.job_seconds:,} s of processor time and was stopped "
                    "(an administrator can raise LOUPE_JOB_SECONDS).")
        if exitcode in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS):
            return f"{label} stopped: its worker process ended abruptly (out of memory or a decoder crash)."
        return f"{label} stopped: its worker process ended (exit code {exitcode})."
