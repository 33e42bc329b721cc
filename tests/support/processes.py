"""
Ending the real daemons the tests start.
"""

import subprocess


def stop_process(proc, timeout=10):
    """
    Terminate C{proc} if it still runs; kill it if it has not exited
    within C{timeout} seconds, so that no test leaves a daemon behind.

    @return: its exit status, or L{None} without a process.
    @raise subprocess.TimeoutExpired: if it has not exited C{timeout}
        seconds after the kill either (stuck in the kernel): the test
        fails instead of hanging.
    """
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)
