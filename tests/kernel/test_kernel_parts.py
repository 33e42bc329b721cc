"""
The kernel tier's own parts that need no guest: the cpio writer (checked
by the real C{cpio}), module ordering, kernel image extraction, and the
parsing of what the guest prints.
"""

import gzip
import lzma
import os
import shutil
import stat
import subprocess

import pytest

import guestscript as gs
from initramfs import newc_archive
from kernelcache import KernelFetchError, decompress_bzimage, load_order, module_dependencies


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_newc_archive_read_by_cpio(tmp_path):
    """
    GNU cpio lists and extracts the archive: names, types, link targets
    and contents survive, including odd lengths that need padding.
    """
    archive = newc_archive(
        [
            ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
            ("bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\necho odd\n", (0, 0)),
            ("bin/sh", stat.S_IFLNK | 0o777, b"tool", (0, 0)),
            ("data", stat.S_IFREG | 0o644, b"x" * 4097, (0, 0)),
        ]
    )
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["bin", "bin/tool", "bin/sh", "data"]
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path, capture_output=True, check=True)
    assert (tmp_path / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho odd\n"
    assert (tmp_path / "bin" / "sh").readlink().as_posix() == "tool"
    assert (tmp_path / "data").read_bytes() == b"x" * 4097


def test_load_order_dependencies_first():
    deps = {"nfsv3": ["nfs"], "nfs": ["sunrpc", "lockd", "fscache"], "lockd": ["sunrpc", "grace"],
            "fscache": ["netfs"], "sunrpc": [], "grace": [], "netfs": []}
    order = load_order(["nfsv3"], deps.__getitem__)
    assert order[-1] == "nfsv3"
    for module, needs in deps.items():
        assert all(order.index(n) < order.index(module) for n in needs)
    assert sorted(order) == sorted(deps)


def test_load_order_cycle():
    with pytest.raises(KernelFetchError, match="cycle"):
        load_order(["a"], {"a": ["b"], "b": ["a"]}.__getitem__)


def test_module_dependencies():
    modinfo = b"\x7fELF...\x00license=GPL\x00depends=sunrpc,grace\x00retpoline=Y\x00"
    assert module_dependencies(modinfo) == ["sunrpc", "grace"]
    assert module_dependencies(b"\x00license=GPL\x00depends=\x00") == []
    assert module_dependencies(b"no modinfo at all") == []


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress])
def test_decompress_bzimage(compress):
    elf = b"\x7fELF" + bytes(range(256)) * 64
    image = b"MZ setup code" + b"\x00" * 100 + compress(elf) + b"trailing data"
    assert decompress_bzimage(image) == elf


def test_decompress_bzimage_without_elf():
    assert decompress_bzimage(b"MZ" + lzma.compress(b"not a kernel")) is None


def test_results_and_op_delta():
    output = "\n".join(
        [
            "noise",
            "R link./mail.alice /home/alice/.mailspool",
            "R ops.t-before LOOKUP 10",
            "R ops.t-before GETATTR 3",
            "R ops.t-after LOOKUP 30",
            "R ops.t-after GETATTR 3",
            "R ops.t-after READLINK 2",
        ]
    )
    assert gs.results(output)["link./mail.alice"] == "/home/alice/.mailspool"
    assert gs.op_delta(output, "t-before", "t-after") == {"LOOKUP": 20, "READLINK": 2}


def test_loop_counts():
    line = "uid=5001 egid=4242 ok=10 wrong=1 errors=0 first_wrong=/x first_error=-"
    assert gs.loop_counts(line) == {
        "uid": 5001, "egid": 4242, "ok": 10, "wrong": 1, "errors": 0,
        "first_wrong": "/x", "first_error": "-",
    }


def test_nfs_options():
    assert gs.nfs_options(2049, 2, ("lookupcache=none",)) == (
        "vers=2,proto=tcp,port=2049,mountport=2049,mountproto=tcp,"
        "addr=10.0.2.2,mountaddr=10.0.2.2,nolock,ro,lookupcache=none"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="changing credentials needs root")
def test_probe_alternate(probe, tmp_path):
    """
    The guest's probe program takes turns between callers and counts each
    caller's own results: here two callers read a local link whose value
    only one of them expects.
    """
    link = tmp_path / "link"
    link.symlink_to("/target/of/link")
    result = subprocess.run(
        [str(probe), "alternate", "readlink", "7", str(link), "0:0:0:/target/of/link", "0:0:0:/other"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    counts = sorted((gs.loop_counts(line) for line in result.stdout.splitlines()), key=lambda c: c["ok"])
    assert [(c["ok"], c["wrong"], c["errors"]) for c in counts] == [(0, 3, 0), (4, 0, 0)]
    assert counts[0]["first_wrong"] == "/target/of/link"


def test_probe_loop_open(probe, tmp_path):
    """
    An open loop reads the first line of the file behind the path, and
    counts a missing file as an error with its reason.
    """
    (tmp_path / "owner").write_text("alice\nmore\n")
    ok = subprocess.run(
        [str(probe), "loop", "open", "50", str(tmp_path / "owner"), "alice"],
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0
    assert gs.loop_counts(ok.stdout) | {"uid": 0, "egid": 0} == {
        "uid": 0, "egid": 0, "ok": 50, "wrong": 0, "errors": 0, "first_wrong": "-", "first_error": "-",
    }
    missing = subprocess.run(
        [str(probe), "loop", "open", "5", str(tmp_path / "nothing"), "alice"],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 1
    assert "errors=5" in missing.stdout and "No such file or directory" in missing.stdout
