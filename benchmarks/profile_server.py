"""
Profile a running hlfs server under load and summarise where its time goes.

The sampler is py-spy (C{pip install py-spy}): it reads the server's
stacks from outside, so the server runs at full speed.  Threads waiting on
a condition for work are left out; the reactor's time in epoll, waiting
included, is not (it shows as C{doPoll}), so compare the server's CPU per
call (loadgen's C{--server-pid}) before reading shares as costs.  A leaf frame
that is a Python function calling into C (C{socket.sendto}, C{struct})
carries that C time as its own: py-spy shows Python frames only.

Used by C{benchmarks/run.py --scenario profile}, which writes
C{benchmarks/PROFILE.md}.
"""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_pyspy():
    """
    @return: the path of py-spy next to this interpreter or on C{PATH}, or
        C{None}.
    """
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return exe if os.path.exists(exe) else shutil.which("py-spy")


def record(pyspy, pid, seconds, output, rate=250):
    """
    Sample process C{pid} for C{seconds} into C{output} (collapsed stacks).

    @return: a C{Popen} to wait for, so load can run meanwhile.
    """
    return subprocess.Popen(
        [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--rate", str(rate), "--format", "raw", "--output", output],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def frame_name(frame):
    """
    C{"decode_call (hlfs/rpc/message.py:150)"} -> C{"decode_call (hlfs/rpc/message.py)"}:
    a function, whatever line it was on.
    """
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{m.group('func')} ({m.group('file')})"


# Leaf frames of threads that wait for work: not busy, although py-spy
# does not always see them as idle.
IDLE_LEAVES = frozenset({"Condition.wait (threading.py)", "Event.wait (threading.py)"})


def parse_collapsed(lines):
    """
    Read py-spy's raw (collapsed) output.

    @return: C{(own, inclusive, total)}: samples per function as the leaf,
        samples per function anywhere on the stack (once per stack), and
        all samples.
    """
    own, inclusive = Counter(), Counter()
    total = 0
    for line in lines:
        m = _LINE.match(line.strip())
        if not m:
            continue
        stack, count = m.group(1), int(m.group(2))
        frames = [frame_name(f) for f in stack.split(";")]
        if frames[-1] in IDLE_LEAVES:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    return own, inclusive, total


def summarise(own, inclusive, total, top=15, under=("hlfs/",)):
    """
    Markdown tables: the C{top} functions by own time, then the project's
    functions (files matching C{under}) by inclusive time.
    """
    if not total:
        return "No samples."
    out = ["| own % | function |", "|---|---|"]
    for f, n in own.most_common(top):
        out.append(f"| {100 * n / total:.1f} | `{f}` |")
    out += ["", "| inclusive % | project function |", "|---|---|"]
    ours = [(f, n) for f, n in inclusive.most_common() if any(u in f for u in under)]
    for f, n in ours[:top]:
        out.append(f"| {100 * n / total:.1f} | `{f}` |")
    return "\n".join(out)
