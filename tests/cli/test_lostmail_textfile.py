"""
C{hlfs lostmail --textfile FILE}: after each run, the real command writes
what it did in node_exporter's textfile-collector format, read back here
with prometheus_client's parser (the one node_exporter's format follows):
the last run and the last success, messages resent, problems, mailboxes
left in the spool; written atomically, never through a link planted in
the directory, and not at all where the directory does not exist.
"""

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.mail.test_lostmail import Env
from tests.support.mail import ALICE, BOB, make_dir, message, needs_root, run_hlfs, scratch_dir

pytestmark = needs_root


class Spool(Env):
    """
    The remailer tests' spool, password file and recording sendmail
    (L{Env}), with node_exporter's textfile directory beside them.
    """

    def __init__(self, root):
        Env.__init__(self, root)
        self.metrics = make_dir(os.path.join(root, "node-exporter"), 0o755)
        self.textfile = os.path.join(self.metrics, "hlfs_lostmail.prom")

    def messages(self, name, uid, count):
        return self.mailbox(os.fsencode(name), [(b"sender@example.org", message(n))
                                                for n in range(count)], owner=uid)

    def run(self, *extra):
        return Env.run(self, "--syslog-socket", "", "--textfile", self.textfile, *extra)

    def figures(self):
        with open(self.textfile) as f:
            text = f.read()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                assert sample.labels == {"alt_dir": self.alt}, sample
                found[sample.name.removeprefix("hlfs_lostmail_")] = sample.value
        return found


@pytest.fixture
def spool():
    with scratch_dir() as root:
        yield Spool(root)


def test_a_good_run_then_a_failing_one(spool):
    spool.messages("alice", ALICE[1], 3)
    before = time.time()
    result = spool.run()
    after = time.time()
    assert result.returncode == 0, result.stderr
    first = spool.figures()
    assert before <= first["last_run_timestamp_seconds"] <= after
    assert first["last_success_timestamp_seconds"] == first["last_run_timestamp_seconds"]
    assert (first["last_run_success"], first["messages_resent"], first["problems"],
            first["mailboxes_left"]) == (1, 3, 0, 0)
    assert 0 <= first["last_run_duration_seconds"] <= after - before

    # bob's second message is refused (it and the third stay in a working
    # copy); a mailbox of alice's owned by bob is left in the spool as a
    # forgery: two mailboxes left.
    spool.messages("bob", BOB[1], 3)
    spool.refuse(b"test message 1\n")
    spool.messages("alice", BOB[1], 1)
    result = spool.run()
    assert result.returncode == 1
    second = spool.figures()
    assert second["last_run_timestamp_seconds"] > first["last_run_timestamp_seconds"]
    # The last success is the first run's, carried over.
    assert second["last_success_timestamp_seconds"] == first["last_success_timestamp_seconds"]
    assert second["last_run_success"] == 0
    assert second["messages_resent"] == 1
    assert second["problems"] >= 2
    assert second["mailboxes_left"] == 2


def test_written_atomically_never_through_a_planted_link(spool):
    victim = os.path.join(spool.root, "victim")
    with open(victim, "w") as f:
        f.write("untouched\n")
    os.symlink(victim, spool.textfile)
    for name in range(100):
        # Names a writer with a predictable temporary name might use.
        os.symlink(victim, os.path.join(spool.metrics, f"hlfs_lostmail.prom.{name}"))
    result = spool.run()
    assert result.returncode == 0, result.stderr
    with open(victim) as f:
        assert f.read() == "untouched\n"
    assert not os.path.islink(spool.textfile)
    assert oct(os.stat(spool.textfile).st_mode & 0o777) == oct(0o644)
    assert spool.figures()["last_run_success"] == 1
    leftovers = [n for n in os.listdir(spool.metrics) if n.endswith(".tmp")]
    assert leftovers == []


def test_nothing_written_without_the_directory(spool):
    os.rmdir(spool.metrics)
    result = spool.run()
    assert (result.returncode, result.stderr) == (0, b"")
    assert not os.path.exists(spool.metrics)


def test_dry_run_writes_nothing(spool):
    spool.messages("alice", ALICE[1], 1)
    assert spool.run("--dry-run").returncode == 0
    assert not os.path.exists(spool.textfile)


def test_the_path_from_the_configuration_file(spool):
    config = os.path.join(spool.root, "lostmail.conf")
    with open(config, "w") as f:
        f.write(f"[lostmail]\ntextfile = {spool.textfile}\n")
    result = run_hlfs("lostmail", "--config", config, "--alt-dir", spool.alt,
                      "--state-dir", spool.state,
                      "--sendmail", spool.sendmail, "--password-file", spool.passwd,
                      "--syslog-socket", "")
    assert result.returncode == 0, result.stderr
    assert spool.figures()["last_run_success"] == 1
