"""
The conformance matrix on the wire: every procedure a client can send to
C{/mail}, for every kind of entry, as each caller of Tables 1-3, asked of
a real C{twistd hlfs} and of nfs-ganesha exporting directories with the
same entries (L{tests.support.conformance}), live, from the same state.
Every answer that differs must have a documented reason
(L{tests.support.conformance_doc}), and docs/conformance.md must show
what this run found.

    HLFS_WRITE_CONFORMANCE=1 .venv/bin/python -m pytest tests/nfs/test_conformance.py

rewrites the generated part of docs/conformance.md from a run.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import conformance, conformance_doc, ganesha, nfscalls
from tests.support.conformance import LOCK, Target
from tests.support.rpcsock import cred
from tests.support.server import RunningServer, make_base

pytestmark = [pytest.mark.root(reason="nfs-ganesha's VFS backend and hlfs's home checks need root")]

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "conformance.md"
ROOT = cred(0)


@pytest.fixture(scope="module")
def servers():
    """
    hlfs and nfs-ganesha, each with a connection per NFS version, and
    the reference's directories.
    """
    reason = ganesha.missing()
    if reason:
        pytest.skip(reason)
    base = make_base(name="conformance")
    hlfs = RunningServer(base, []).start()
    reference = conformance.Reference(tempfile.mkdtemp(prefix="conformance-ref-", dir="/tmp"))
    os.chmod(reference.base, 0o755)
    reference.build()
    exports = [ganesha.Export(reference.export(view), squash="no_root_squash", attr_expiration=0)
               for view in reference.views]
    server = ganesha.Ganesha(exports, reference.base / "ganesha").start()
    sides = []
    try:
        mine = conformance.Side("hlfs", hlfs.port, hlfs.port, {view: b"/mail" for view in reference.views})
        sides.append(mine)
        mine_v2 = conformance.Side("hlfs", hlfs.port, hlfs.port, {view: b"/mail" for view in reference.views}, 2)
        sides.append(mine_v2)
        theirs = conformance.Side(
            "ganesha", server.nfs_port, server.mount_port,
            {view: str(reference.export(view)).encode() for view in reference.views},
        )
        sides.append(theirs)
        # alice's home check makes her spool, where her lock goes.
        mine.call(nfscalls.V3[0], Target(mine.roots["table2"], b"alice", None, None, b""), ROOT)
        lock = base / "home" / "alice" / ".mailspool" / LOCK.decode()
        yield conformance.Matrix(mine, theirs, lock, reference, mine_v2)
    finally:
        for side in sides:
            side.close()
        server.stop()
        hlfs.stop()
        shutil.rmtree(reference.base, ignore_errors=True)
    assert "Traceback" not in hlfs.logtext(), hlfs.logtext()


@pytest.fixture(scope="module")
def matrix(servers):
    return servers.run()


def test_every_difference_has_a_reason(matrix):
    """
    Each call hlfs answers otherwise than the real server is of a kind
    docs/conformance.md explains; root's lock calls, the OpenSMTPD
    create and every EXIST answer as the real server's do.
    """
    cells, v2 = matrix
    _, unexplained = conformance_doc.explain(cells, conformance_doc.REASONS)
    assert unexplained == [], "\n".join(map(str, unexplained))
    _, unexplained = conformance_doc.explain(v2, conformance_doc.V2_REASONS)
    assert unexplained == [], "\n".join(map(str, unexplained))
    by = {(c.caller, c.entry, c.procedure): c for c in cells}
    opensmtpd = by["root", "NAME", "CREATE/E"]
    assert opensmtpd.hlfs == opensmtpd.reference == "EXIST"
    for procedure in ("CREATE/U", "CREATE/G", "REMOVE", "RENAME"):
        for entry in ("NAME.lock held", "NAME.lock free"):
            cell = by["root", entry, procedure]
            assert cell.hlfs == cell.reference, cell


def test_every_reason_explains_a_difference(matrix):
    cells, v2 = matrix
    explained, _ = conformance_doc.explain(cells, conformance_doc.REASONS)
    assert conformance_doc.unused(explained, conformance_doc.REASONS) == []
    explained, _ = conformance_doc.explain(v2, conformance_doc.V2_REASONS)
    assert conformance_doc.unused(explained, conformance_doc.V2_REASONS) == []


def silly_rename(side, state):
    """
    Root's side of the Linux client's silly rename of an open
    C{alice.lock}: the answers, in order.
    """
    root = side.roots["table2"]
    hidden = b".nfs" + b"6" * 16 + b"0000abcd"
    by_label = {p.label: p for p in nfscalls.V3}
    steps = (
        ("LOOKUP the hidden name", "LOOKUP", hidden),
        ("RENAME the lock to it", "RENAME", LOCK),
        ("LOOKUP the lock", "LOOKUP", LOCK),
        ("LOOKUP the hidden name", "LOOKUP", hidden),
        ("REMOVE the hidden name", "REMOVE", hidden),
        ("REMOVE it again", "REMOVE", hidden),
    )
    answers = []
    for label, procedure, name in steps:
        answer, _ = side.call(by_label[procedure], Target(root, name, None, None, hidden), ROOT)
        answers.append((label, answer, state()))
    return answers


def test_silly_rename_as_on_a_real_server(servers):
    """
    If root renames its held lock to a hidden C{.nfs} name and later
    removes that name, as the Linux client does for a lock a process
    removes while it holds it open, then each step answers as on the real
    server, but for the hidden name's LOOKUP: hlfs removed the real lock
    at the rename (what the process asked for), so it is no node.  On the
    host the lock is gone from the rename on.
    """
    conformance.set_lock(servers.hlfs_lock, True)
    servers.dirs.restore("table2", held=True)
    mine = silly_rename(servers.hlfs, servers.hlfs_lock.exists)
    theirs = silly_rename(servers.reference, lambda: (servers.dirs.export("table2") / LOCK.decode()).exists())
    servers.dirs.restore("table2", held=False)
    assert [a[2] for a in mine] == [True] + [False] * 5
    assert [a[2] for a in theirs] == [True] + [False] * 5
    for n, ((label, answer, _), (_, reference, _)) in enumerate(zip(mine, theirs)):
        if n == 3:
            assert (answer, reference) == ("NOENT", "OK REG"), label
        else:
            assert answer == reference, (label, answer, reference)
    assert mine[1][1] == "OK" and mine[4][1] == "OK"


def test_document_is_current(matrix):
    """
    docs/conformance.md shows the answers of this run.
    """
    cells, v2 = matrix
    generated = conformance_doc.render(cells, v2)
    text = DOC.read_text()
    if os.environ.get("HLFS_WRITE_CONFORMANCE"):
        DOC.write_text(conformance_doc.replace_generated(text, generated))
        return
    assert conformance_doc.generated_part(text) == generated, (
        "docs/conformance.md is not what this run found: rerun with HLFS_WRITE_CONFORMANCE=1"
    )
