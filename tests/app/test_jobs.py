"""The job runner: progress, cancel, failures that never escape, responsiveness."""

import threading
import time

import pytest

from app.viewer._jobs import JobCancelled, JobRunner, JobStatus


@pytest.fixture
def runner():
    r = JobRunner()
    yield r
    r.shutdown()


def test_job_runs_reports_progress_and_returns(runner):
    seen = []
    runner.on_update(lambda job: seen.append((job.status, round(job.fraction, 2))))

    def work(ctx):
        for i in range(5):
            ctx.progress((i + 1) / 5, f"step {i}")
            time.sleep(0.06)
        return 42

    job = runner.submit("work", work)
    assert job.wait(5)
    assert job.status is JobStatus.DONE and job.result == 42 and job.fraction == 1.0
    statuses = [s for s, _ in seen]
    assert statuses[0] is JobStatus.QUEUED and JobStatus.RUNNING in statuses
    assert statuses[-1] is JobStatus.DONE
    assert any(0 < f < 1 for _, f in seen)


def test_submit_returns_at_once(runner):
    gate = threading.Event()
    job = runner.submit("slow", lambda ctx: gate.wait(5))
    assert not job.status.finished  # had submit waited for the job, the gate would have timed out
    gate.set()
    assert job.wait(5) and job.status is JobStatus.DONE


def test_cancel_stops_a_running_job(runner):
    started = threading.Event()

    def work(ctx):
        started.set()
        while True:
            ctx.check()
            time.sleep(0.01)

    job = runner.submit("forever", work)
    assert started.wait(5)
    assert runner.cancel() is True
    assert job.wait(5)
    assert job.status is JobStatus.CANCELLED


def test_cancelled_queued_job_never_runs(runner):
    gate = threading.Event()
    ran = []
    first = runner.submit("first", lambda ctx: gate.wait(5))
    second = runner.submit("second", lambda ctx: ran.append(1))
    runner.cancel(second)
    gate.set()
    assert first.wait(5) and second.wait(5)
    assert second.status is JobStatus.CANCELLED and ran == []


@pytest.mark.parametrize(
    "exc", [RuntimeError("boom"), SystemExit(3), KeyboardInterrupt(), JobCancelled()]
)
def test_a_crash_inside_a_job_is_contained(runner, exc):
    def bad(ctx):
        raise exc

    job = runner.submit("bad", bad)
    assert job.wait(5)
    if isinstance(exc, JobCancelled):
        assert job.status is JobStatus.CANCELLED
    else:
        assert job.status is JobStatus.FAILED
        assert type(exc).__name__ in job.error
        assert job.traceback
    # The worker is alive and runs the next job.
    nxt = runner.submit("next", lambda ctx: "ok")
    assert nxt.wait(5) and nxt.result == "ok"


def test_failing_listener_and_on_done_do_not_break_jobs(runner):
    runner.on_update(lambda job: 1 / 0)
    done = []
    job = runner.submit("x", lambda ctx: 7, on_done=lambda j: (done.append(j.result), 1 / 0))
    assert job.wait(5) and job.status is JobStatus.DONE and done == [7]


def test_jobs_run_in_order_and_wait_idle(runner):
    order = []
    for i in range(4):
        runner.submit(f"j{i}", lambda ctx, i=i: order.append(i))
    assert runner.wait_idle(5)
    assert order == [0, 1, 2, 3] and not runner.busy


def test_shutdown_refuses_new_jobs():
    r = JobRunner()
    r.shutdown()
    with pytest.raises(RuntimeError):
        r.submit("late", lambda ctx: None)
