"""Worker jobs: OS limits end a bomb's job (never the caller), refusals cross intact, a user's queue is bounded."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import jobwork
import pytest

from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.jobs import JobCancelled, JobFailed, JobRunner, QueueFull

PRELOAD = ["numpy", "jobwork"]


@pytest.fixture
def runner() -> JobRunner:
    return JobRunner(Budgets(job_memory_bytes=256 * 2**20, job_seconds=2, workers=2, jobs_per_user=2),
                     preload=PRELOAD)


def test_a_job_runs_in_another_process_and_reports_progress_in_the_callers_thread(runner: JobRunner) -> None:
    seen: list[tuple[int, int, str]] = []
    pid, stats = runner.run_with_stats("ann", "Counting", jobwork.counted, (30,),
                                       progress=lambda done, total: seen.append(
                                           (done, total, threading.current_thread().name)))
    assert pid != os.getpid()
    # Gradio's progress lives in the handler's context: every call comes on the thread that waits
    assert seen and {name for *_, name in seen} == {threading.current_thread().name}
    steps = [done for done, _, _ in seen]
    assert steps == sorted(steps) and seen[-1][:2] == (30, 30)
    assert 0 < stats.start_rss_bytes <= stats.peak_rss_bytes < 2**30 and stats.grown_bytes < 2**28


def test_a_refusal_comes_back_as_raised_with_its_budget(runner: JobRunner) -> None:
    with pytest.raises(BudgetExceeded) as refused:
        runner.run("ann", "Reading the file", jobwork.refuse)
    assert refused.value.budget == "max_pixels"
    assert "LOUPE_MAX_IMAGE_PIXELS" in str(refused.value)


def test_a_memory_bomb_ends_its_own_job_only(runner: JobRunner) -> None:
    with pytest.raises(JobFailed, match="more than 256 MiB of memory.*LOUPE_JOB_MEMORY_BYTES"):
        runner.run("ann", "Reading the file", jobwork.allocate, (2048,))
    # the same pool takes the next job, and a job inside the budget gets its memory
    assert runner.run("ann", "Reading the file", jobwork.allocate, (64,)) == 64 * 2**20 // 8


def test_a_job_over_its_time_is_stopped(runner: JobRunner) -> None:
    with pytest.raises(JobFailed, match="LOUPE_JOB_SECONDS"):
        runner.run("ann", "Checking", jobwork.spin)


def test_a_worker_killed_mid_job_fails_that_job_with_a_message(runner: JobRunner) -> None:
    with pytest.raises(JobFailed, match="ended abruptly"):
        runner.run("ann", "Reading the file", jobwork.die)
    assert runner.run("ann", "Counting", jobwork.counted, (1,)) != os.getpid()


def test_each_user_has_a_bounded_queue_and_never_takes_every_worker(runner: JobRunner, tmp_path: Path) -> None:
    flag = str(tmp_path / "go")
    results: dict[str, object] = {}
    places: list[int] = []

    def start(name: str, owner: str, fn, args: tuple, **kw: object) -> threading.Thread:  # noqa: ANN001
        def body() -> None:
            try:
                results[name] = runner.run(owner, "Waiting", fn, args, **kw)
            except Exception as exc:  # noqa: BLE001 - recorded for the asserts
                results[name] = exc
        thread = threading.Thread(target=body)
        thread.start()
        return thread

    first = start("a1", "ann", jobwork.wait_for, (flag,))
    deadline = time.monotonic() + 30
    while not Path(flag + ".pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = start("a2", "ann", jobwork.wait_for, (flag,), waiting=places.append)
    time.sleep(0.5)
    with pytest.raises(QueueFull, match="LOUPE_JOBS_PER_USER"):  # ann's third job
        runner.run("ann", "Waiting", jobwork.counted, (1,))
    # ann's first job holds one of the two workers and her second waits for her turn: bob's runs now
    assert isinstance(runner.run("bob", "Counting", jobwork.counted, (1,)), int)
    assert "a1" not in results and "a2" not in results
    assert places and places[0] >= 1  # ann's second job said it waits behind her first
    Path(flag).touch()
    for thread in (first, second):
        thread.join(60)
    assert results == {"a1": "done", "a2": "done"}


def test_a_cancelled_job_stops_its_worker(runner: JobRunner, tmp_path: Path) -> None:
    flag = str(tmp_path / "never")
    asked = time.monotonic()
    with pytest.raises(JobCancelled):
        runner.run("ann", "Reading the file", jobwork.wait_for, (flag,),
                   cancelled=lambda: Path(flag + ".pid").exists())
    pid = int(Path(flag + ".pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert time.monotonic() - asked < 60


def test_the_load_benchs_worker_fault_kills_a_busy_worker_and_the_pool_goes_on(runner: JobRunner) -> None:
    from loupe.apps.bench_faults import job_workers, kill_a_busy_worker

    runner.run("ann", "Counting", jobwork.counted, (1,))  # the workers started (a starting worker is busy too)
    failures: list[str] = []

    def busy() -> None:
        with pytest.raises(JobFailed) as failed:
            runner.run("ann", "Checking", jobwork.spin)
        failures.append(str(failed.value))

    thread = threading.Thread(target=busy)
    thread.start()
    killed = kill_a_busy_worker(os.getpid(), within_s=30, sample_s=0.2)
    thread.join(30)
    assert killed is not None and killed not in job_workers(os.getpid())
    assert failures and "ended abruptly" in failures[0]  # not the 2 s CPU limit: the kill came first
    assert runner.run("ann", "Counting", jobwork.counted, (1,)) != os.getpid()
