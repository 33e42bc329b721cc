"""
The status program's reply, built at most once per reactor turn.
"""

from twisted.internet.task import Clock

from hlfs.nfs.status import StatusProgram, decode_pairs
from hlfs.xdr import Unpacker


class CountingReport:
    """
    A report whose one pair counts the times it was made.
    """

    def __init__(self):
        self.made = 0

    def __call__(self):
        self.made += 1
        return [("made", self.made)]


def status(program):
    return decode_pairs(Unpacker(program.status(b"", None)))


def test_calls_in_one_turn_share_one_report():
    """
    If a hundred STATUS calls are answered in one reactor turn, then the
    report is made once and each gets it; the next turn makes it anew.
    """
    clock, report = Clock(), CountingReport()
    program = StatusProgram(report, clock, lambda: 7)
    replies = [status(program) for _ in range(100)]
    assert report.made == 1 and replies == [[("made", "1")]] * 100
    clock.advance(0)
    assert status(program) == [("made", "2")] and report.made == 2
    assert not [c for c in clock.getDelayedCalls() if c.getTime() > clock.seconds()]


def test_another_call_between_makes_the_report_again():
    """
    If a client asks for the status, makes another call, and asks again,
    all within one reactor turn (a UDP port reads on while datagrams keep
    coming), then the second report is made anew, after that call.
    """
    clock, report, calls = Clock(), CountingReport(), [0]
    program = StatusProgram(report, clock, lambda: calls[0])
    assert status(program) == [("made", "1")]
    calls[0] += 1
    assert status(program) == [("made", "2")]
    assert status(program) == [("made", "2")]
