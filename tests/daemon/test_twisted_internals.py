"""
The private Twisted internal hlfs relies on, pinned so that a Twisted
upgrade that changes it fails here, loudly, instead of changing the
daemon's behaviour quietly:

  - C{reactor._exitSignal}: twistd re-raises the signal that stopped the
    reactor at exit; hlfs clears it so SIGTERM exits 0, as hlfsd does and
    systemd expects (L{hlfs.daemon.service.HLFSService._after_shutdown}).

(The probe pool's threads are hlfs's own, L{hlfs.homes.workers}: their
stop not waiting for a thread stuck in a hung home is tested there.)
"""

import inspect

from twisted.application import app
from twisted.internet import epollreactor


def test_twistd_reraises_the_reactors_exit_signal():
    reactor = epollreactor.EPollReactor()
    assert reactor._exitSignal is None, "Twisted's reactors no longer have _exitSignal"
    source = inspect.getsource(app.ApplicationRunner.startReactor)
    assert "reactor._exitSignal" in source, "twistd no longer reads reactor._exitSignal"
