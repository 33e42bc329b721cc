"""
L{hlfs.homes.workers.WorkerThreads}, the probe pool's threads: bounded,
in order, idle threads reused, busy threads taking the next job
themselves, and a stop that does not wait for a stuck thread.
"""

import threading
import time

import pytest

from hlfs.homes.workers import WorkerThreads


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_jobs_run_in_threads_in_order():
    workers = WorkerThreads(1, name="t")
    workers.start()
    seen = []
    done = threading.Event()
    for k in range(50):
        workers.submit(lambda k=k: seen.append((k, threading.current_thread().name)))
    workers.submit(done.set)
    assert done.wait(10)
    assert [k for k, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"t-0"}
    workers.stop()


def test_threads_are_bounded_and_busy_ones_take_the_next_job():
    workers = WorkerThreads(2, name="t")
    workers.start()
    release = threading.Event()
    started = []
    for _ in range(2):
        workers.submit(lambda: (started.append(1), release.wait(30)))
    _wait_for(lambda: len(started) == 2)
    ran = threading.Event()
    workers.submit(ran.set)
    # Every thread is busy: the job waits, no third thread starts.
    assert not ran.wait(0.2)
    assert len(workers.threads) == 2 and workers.pending() == 1
    release.set()
    assert ran.wait(10)
    workers.stop()


def test_an_idle_thread_is_woken_rather_than_a_new_one_started():
    workers = WorkerThreads(4, name="t")
    workers.start()
    names = []
    for _ in range(20):
        done = threading.Event()
        workers.submit(lambda done=done: (names.append(threading.current_thread().name),
                                          done.set()))
        assert done.wait(10)
        _wait_for(lambda: len(workers._idle) == len(workers.threads))
    assert len(workers.threads) == 1 and set(names) == {"t-0"}
    workers.stop()


def test_a_raising_job_keeps_its_thread(monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    workers = WorkerThreads(1, name="t")
    workers.start()
    done = threading.Event()
    workers.submit(lambda: 1 / 0)
    workers.submit(done.set)
    assert done.wait(10)
    assert len(hooked) == 1 and hooked[0].exc_type is ZeroDivisionError
    workers.stop()


def test_stop_does_not_wait_for_a_stuck_thread_and_drops_later_jobs():
    workers = WorkerThreads(2, name="t")
    workers.start()
    release = threading.Event()
    running = threading.Event()
    workers.submit(lambda: (running.set(), release.wait(30)))
    assert running.wait(10)
    idle_done = threading.Event()
    workers.submit(idle_done.set)
    assert idle_done.wait(10)
    began = time.monotonic()
    workers.stop(timeout=0.1)
    assert time.monotonic() - began < 5
    late = threading.Event()
    workers.submit(late.set)
    assert not late.wait(0.2)
    release.set()
    for thread in workers.threads:
        thread.join(10)
        assert not thread.is_alive()


def test_quick_jobs_keep_to_the_awake_threads():
    workers = WorkerThreads(8, name="t", awake=2, slow_after=5.0)
    workers.start()
    gate = threading.Event()
    names = set()
    done = threading.Event()
    jobs = 200
    count = []

    def job():
        gate.wait(10)
        names.add(threading.current_thread().name)
        count.append(1)
        if len(count) == jobs:
            done.set()

    waits = [workers.submit(job) for _ in range(jobs)]
    gate.set()
    assert done.wait(10)
    # Two threads were woken; the rest waited for them, not for a new thread.
    assert len(workers.threads) == 2 and len(names) <= 2
    assert waits[:2] == [False, False] and all(waits[2:])
    workers.stop()


def test_recheck_wakes_another_thread_past_a_slow_job():
    workers = WorkerThreads(4, name="t", awake=1, slow_after=1.0)
    workers.start()
    release = threading.Event()
    running = threading.Event()
    assert not workers.submit(lambda: (running.set(), release.wait(30)))
    assert running.wait(10)
    ran = threading.Event()
    assert workers.submit(ran.set)
    assert workers.recheck()  # the job is not slow yet: no second thread
    assert not ran.wait(0.2)
    time.sleep(1.0)
    # Now it is: the waiting job gets a thread of its own.
    assert not workers.recheck()
    assert ran.wait(10)
    assert len(workers.threads) == 2
    release.set()
    workers.stop()


def test_a_probe_waiting_behind_slow_ones_gets_a_thread(rt):
    """
    Through the probe pool, on the real reactor: two probes stuck (as in
    hung homes) hold both awake threads; a third user's probe waits, and
    the pool's recheck gives it a thread of its own well within a
    deadline, not after the stuck ones.
    """
    from hlfs.homes.pool import ProbePool

    pool = ProbePool(threads=4, reactor=rt.reactor)
    rt.call(pool.start)
    release = threading.Event()
    answers = {}
    done = threading.Event()

    def finish(flight, result):
        answers[flight.key] = result
        if flight.key == 3:
            done.set()
        return result

    try:
        for key in (1, 2):
            rt.call(pool.submit, key, b"/stuck", release.wait, (30,), finish)
        _wait_for(lambda: pool.busy() == 2)
        began = time.monotonic()
        rt.call(pool.submit, 3, b"/quick", lambda: "ok", (), finish)
        assert done.wait(10)
        assert time.monotonic() - began < 2.0
        assert answers == {3: "ok"}
    finally:
        release.set()
        _wait_for(lambda: len(answers) == 3)
        rt.call(pool.stop)


def test_the_probe_pool_keeps_quick_checks_to_one_thread(rt):
    """
    Through the probe pool: a burst of quick checks runs on one thread
    (a second one awake only doubles the GIL hand-offs with the reactor),
    while the lookup pool keeps two awake.
    """
    from hlfs.homes.pool import LookupPool, ProbePool

    pool = ProbePool(threads=4, reactor=rt.reactor)
    rt.call(pool.start)
    done = []
    try:
        def burst():
            for key in range(40):
                pool.submit(key, b"/quick", lambda: "ok", (), lambda f, r: done.append(r))

        rt.call(burst)
        _wait_for(lambda: len(done) == 40)
        assert len(pool._threadpool.threads) == 1
    finally:
        rt.call(pool.stop)
    assert LookupPool(threads=4, reactor=rt.reactor)._threadpool.awake == 2


def test_the_probe_pool_shortens_the_gil_switch_interval(rt):
    """
    Starting the probe pool lowers the process's GIL switch interval to
    the pool's (a probe thread back from a system call waits at most that
    long for the reactor to let go of the GIL), and never raises it.
    """
    import sys

    from hlfs.homes import pool as pools

    saved = sys.getswitchinterval()
    pool = pools.ProbePool(threads=1, reactor=rt.reactor)
    try:
        sys.setswitchinterval(0.005)
        rt.call(pool.start)
        assert sys.getswitchinterval() == pytest.approx(pools.SWITCH_INTERVAL)
        rt.call(pool.stop)
        sys.setswitchinterval(0.0001)
        rt.call(pool.start)
        assert sys.getswitchinterval() == pytest.approx(0.0001)
    finally:
        rt.call(pool.stop)
        sys.setswitchinterval(saved)
