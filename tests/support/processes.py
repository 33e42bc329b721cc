"""
Ending the real daemons the tests start.
"""

import subprocess


def stop_process(proc, timeout=10):
    """
    Terminate C{proc} if it still runs; kill it if it has not exited
    within C{timeout} seconds, so that no test leaves a daemon behind.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
