"""
The benchmark profile summary (benchmarks/profile_server.py): py-spy's
collapsed stacks to own and inclusive shares.  Pure logic, on a recorded
sample of py-spy's raw output format.
"""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location(
    "hlfs_benchmarks_profile", os.path.join(ROOT, "benchmarks", "profile_server.py"))
profile_server = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_server)

RAW = """\
<module> (twistd:8);run (twisted/internet/base.py:686);Port.doRead (twisted/internet/udp.py:250);datagramReceived (hlfs/rpc/transport.py:36);Port.write (twisted/internet/udp.py:270) 6
<module> (twistd:8);run (twisted/internet/base.py:686);Port.doRead (twisted/internet/udp.py:250);datagramReceived (hlfs/rpc/transport.py:37);dispatch (hlfs/rpc/dispatch.py:60);decode_call (hlfs/rpc/message.py:150) 3
<module> (twistd:8);run (twisted/internet/base.py:686);Port.doRead (twisted/internet/udp.py:250);datagramReceived (hlfs/rpc/transport.py:37);dispatch (hlfs/rpc/dispatch.py:61);decode_call (hlfs/rpc/message.py:152) 1
not a stack line
<module> (twistd:8);Thread._bootstrap (threading.py:995);Condition.wait (threading.py:320) 50
"""


def test_own_and_inclusive():
    own, inclusive, total = profile_server.parse_collapsed(RAW.splitlines())
    # Threads waiting for work are idle, not busy.
    assert total == 10
    assert "Condition.wait (threading.py)" not in own
    # Lines of one function are merged: decode_call was on two lines.
    assert own["decode_call (hlfs/rpc/message.py)"] == 4
    assert own["Port.write (twisted/internet/udp.py)"] == 6
    assert inclusive["datagramReceived (hlfs/rpc/transport.py)"] == 10
    assert inclusive["dispatch (hlfs/rpc/dispatch.py)"] == 4


def test_summary_lists_project_functions():
    own, inclusive, total = profile_server.parse_collapsed(RAW.splitlines())
    text = profile_server.summarise(own, inclusive, total, top=2)
    lines = text.splitlines()
    assert lines[2] == "| 60.0 | `Port.write (twisted/internet/udp.py)` |"
    assert lines[3] == "| 40.0 | `decode_call (hlfs/rpc/message.py)` |"
    ours = text.split("project function |")[1]
    assert "datagramReceived (hlfs/rpc/transport.py)` |" in ours
    assert "twisted/internet" not in ours
    assert profile_server.summarise(*profile_server.parse_collapsed([])) == "No samples."


def test_a_new_cached_profile_keeps_the_other_sections(tmp_path):
    """
    benchmarks/run.py --scenario profile rewrites PROFILE.md's scenario-1
    section only: the storm's sections, written by hand, stay.
    """
    spec = importlib.util.spec_from_file_location(
        "hlfs_benchmarks_run", os.path.join(ROOT, "benchmarks", "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    path = tmp_path / "PROFILE.md"
    path.write_text(f"{run.PROFILE_TITLE}\n\nold figures\n\n## READLINK\n\nrows\n\n"
                    "# The storm\n\n## Before\n\nkept\n")
    others = run.other_profile_parts(str(path))
    assert "# The storm\n\n## Before\n\nkept\n" in others
    assert "old figures" not in others and "READLINK" not in others
    assert run.other_profile_parts(str(tmp_path / "missing.md")) == ""
