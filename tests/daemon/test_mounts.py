"""
Tests for L{hlfs.daemon.mounts}, with lines recorded from real Linux clients.
"""

from tests.support.proc_mounts import DEFAULT_NFS4_LINE, HLFS_LINE
from hlfs.daemon.mounts import (
    MountEntry,
    attribute_cache_off,
    find_mount,
    lookup_cache_off,
    missing_cache_options,
    parse_options,
    parse_proc_mounts,
)

# A Linux 6.1 client mounting hlfs with every cache off.

# A default NFSv4.2 mount: attribute and lookup caches on.

# actimeo=0 without noac: the kernel lists the four times as zero.
ACTIMEO_LINE = (
    "127.0.0.1:/mail /mail nfs rw,relatime,vers=3,acregmin=0,acregmax=0,acdirmin=0,"
    "acdirmax=0,hard,proto=tcp,lookupcache=pos,addr=127.0.0.1 0 0"
)

TABLE = "\n".join(
    [
        "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
        "/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0",
        "tmpfs /mail tmpfs rw,relatime,size=1024k 0 0",
        HLFS_LINE,
        r"/dev/vdb1 /media/My\040Disk vfat rw,relatime,fmask=0022,codepage=437 0 0",
        DEFAULT_NFS4_LINE,
    ]
) + "\n"


def test_recorded_hlfs_line():
    [entry] = parse_proc_mounts(HLFS_LINE)
    assert entry.device == "127.0.0.1:/mail"
    assert entry.mountpoint == "/mail"
    assert entry.fstype == "nfs"
    assert entry.options["vers"] == "3"
    assert entry.options["lookupcache"] == "none"
    assert entry.options["noac"] is None
    assert "noac" in entry.options and "hard" in entry.options
    assert (entry.dump, entry.passno) == (0, 0)
    assert attribute_cache_off(entry.options)
    assert lookup_cache_off(entry.options)
    assert missing_cache_options(entry.options) == []


def test_default_mount_misses_both():
    [entry] = parse_proc_mounts(DEFAULT_NFS4_LINE)
    assert entry.fstype == "nfs4"
    assert missing_cache_options(entry.options) == ["noac", "lookupcache=none"]


def test_lookup_cache_alone_when_attributes_are_per_handle():
    [entry] = parse_proc_mounts(DEFAULT_NFS4_LINE)
    assert missing_cache_options(entry.options, attributes=False) == ["lookupcache=none"]
    assert missing_cache_options(parse_options("lookupcache=none"), attributes=False) == []


def test_zero_attribute_times_count_as_off():
    [entry] = parse_proc_mounts(ACTIMEO_LINE)
    assert attribute_cache_off(entry.options)
    assert missing_cache_options(entry.options) == ["lookupcache=none"]


def test_partial_zero_times_are_not_enough():
    options = parse_options("acregmin=0,acregmax=0,acdirmin=0,acdirmax=60")
    assert not attribute_cache_off(options)
    assert attribute_cache_off(parse_options("actimeo=0"))
    assert missing_cache_options(parse_options("lookupcache=positive,noac")) == ["lookupcache=none"]


def test_octal_escapes():
    entries = parse_proc_mounts(TABLE)
    disk = [e for e in entries if e.fstype == "vfat"][0]
    assert disk.mountpoint == "/media/My Disk"
    assert disk.options["codepage"] == "437"


def test_last_mount_on_a_point_wins():
    entries = parse_proc_mounts(TABLE)
    entry = find_mount(entries, "/mail")
    assert entry.fstype == "nfs" and entry.device == "127.0.0.1:/mail"
    assert find_mount(entries, "/mail/") == entry
    assert find_mount(entries, "/") .fstype == "ext4"
    assert find_mount(entries, "/nowhere") is None


def test_malformed_lines_are_skipped_and_reported():
    problems = []
    text = "garbage\n\n" + HLFS_LINE + "\na b c d x y\n"
    entries = parse_proc_mounts(text, problems)
    assert len(entries) == 1
    assert [p.lineno for p in problems] == [1, 4]
    assert "expected 6" in problems[0].reason
    # Without a list, they are skipped silently.
    assert len(parse_proc_mounts(text)) == 1


def test_fstab_style_four_fields():
    [entry] = parse_proc_mounts("tmpfs /tmp tmpfs rw")
    assert entry == MountEntry("tmpfs", "/tmp", "tmpfs", {"rw": None}, 0, 0)


def test_this_machine_mount_table_parses():
    """
    Every line of the running kernel's table parses.
    """
    with open("/proc/self/mounts") as f:
        text = f.read()
    problems = []
    entries = parse_proc_mounts(text, problems)
    assert problems == []
    assert len(entries) == len([line for line in text.splitlines() if line.strip()])
    assert find_mount(entries, "/") is not None
