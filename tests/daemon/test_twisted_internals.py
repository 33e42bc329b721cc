"""
The two private Twisted internals hlfs relies on, pinned so that a Twisted
upgrade that changes them fails here, loudly, instead of changing the
daemon's behaviour quietly:

  - C{reactor._exitSignal}: twistd re-raises the signal that stopped the
    reactor at exit; hlfs clears it so SIGTERM exits 0, as hlfsd does and
    systemd expects (L{hlfs.daemon.service.HLFSService._after_shutdown}).
  - C{ThreadPool._team}: the probe pool's stop must not join a thread
    stuck in a hung home, so it quits the team without waiting for it
    (L{hlfs.homes.pool._ProbeThreadPool.stop}).
"""

import inspect
import threading

from twisted.application import app
from twisted.internet import epollreactor
from twisted.python.threadpool import ThreadPool

from hlfs.homes.pool import _ProbeThreadPool


def test_twistd_reraises_the_reactors_exit_signal():
    reactor = epollreactor.EPollReactor()
    assert reactor._exitSignal is None, "Twisted's reactors no longer have _exitSignal"
    source = inspect.getsource(app.ApplicationRunner.startReactor)
    assert "reactor._exitSignal" in source, "twistd no longer reads reactor._exitSignal"


def test_a_pool_stops_without_waiting_for_a_stuck_thread():
    assert hasattr(ThreadPool(), "_team"), "Twisted's ThreadPool no longer has _team"
    pool = _ProbeThreadPool(1, 1)
    pool.start()
    release = threading.Event()
    running = threading.Event()
    pool.callInThread(lambda: (running.set(), release.wait(30)))
    assert running.wait(10)
    pool.stop(timeout=0.1)
    # stop() returned while the job is still stuck: it did not wait for it.
    assert [t.is_alive() for t in pool.threads] == [True]
    release.set()
    for thread in pool.threads:
        thread.join(10)
        assert not thread.is_alive()
