"""
Build the guest's initramfs: busybox, the kernel modules and a first-stage
C{/init} (C{init.sh} next to this file), written as a newc cpio archive
directly, so building needs no privileges and no C{cpio} binary.
"""

import shutil
import stat
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Where busybox-static installs its binary on Debian.
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")


class InitramfsError(Exception):
    """
    Something the initramfs needs is missing.
    """


def newc_entry(name, mode, data=b"", ino=0, rdev=(0, 0)):
    """
    One member of a newc ("070701") cpio archive, as the kernel unpacks it.

    @param name: the path inside the archive, without a leading slash.
    @param mode: the full C{st_mode} (file type and permissions).
    @param data: the file's content (a symbolic link's target).
    @param ino: the inode number; distinct per member.
    @param rdev: major and minor number of a device node.
    """
    name_bytes = name.encode() + b"\x00"
    fields = (
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_bytes), 0,
    )
    header = b"070701" + b"".join(b"%08x" % field for field in fields)
    out = header + name_bytes
    out += b"\x00" * (-len(out) % 4)
    out += data
    out += b"\x00" * (-len(out) % 4)
    return out


def newc_archive(members):
    """
    @param members: C{(name, mode, data, rdev)} tuples.
    @return: the archive's bytes, trailer included.
    """
    parts = [
        newc_entry(name, mode, data, ino=index + 1, rdev=rdev)
        for index, (name, mode, data, rdev) in enumerate(members)
    ]
    parts.append(newc_entry("TRAILER!!!", 0))
    return b"".join(parts)


def find_busybox():
    """
    @return: the path of a static busybox.
    @raise InitramfsError: busybox-static is not installed.
    """
    for path in BUSYBOX_PATHS:
        if Path(path).is_file():
            return Path(path)
    found = shutil.which("busybox")
    if found:
        return Path(found)
    raise InitramfsError("busybox not found: install busybox-static")


def build_initramfs(kernel, target, busybox=None):
    """
    Write the initramfs for C{kernel} to C{target}.

    @param kernel: a L{kernelcache.Kernel}.
    @param target: the file to write.
    @param busybox: a static busybox binary; found if not given.
    @return: C{target}.
    """
    busybox = Path(busybox or find_busybox())
    directory = stat.S_IFDIR | 0o755
    members = [
        (name, directory, b"", (0, 0))
        for name in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules")
    ]
    members += [
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes(), (0, 0)),
        ("bin/sh", stat.S_IFLNK | 0o777, b"busybox", (0, 0)),
        ("init", stat.S_IFREG | 0o755, (HERE / "init.sh").read_bytes(), (0, 0)),
    ]
    names = []
    for module in kernel.modules:
        members.append((f"modules/{module.name}", stat.S_IFREG | 0o644, module.read_bytes(), (0, 0)))
        names.append(module.name)
    members.append(("modules/order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode(), (0, 0)))
    target = Path(target)
    target.write_bytes(newc_archive(members))
    return target
