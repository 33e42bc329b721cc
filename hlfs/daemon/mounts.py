"""
Reading the kernel's mount table (C{/proc/mounts}, C{/proc/self/mounts}).

Pure parsing; callers read the file.  Used by C{hlfs check} and by the
daemon to tell whether its mount has the client-side caches off: hlfs
answers the same C{home} lookup differently for each caller, so a client
that caches attributes or lookups could hand one user's link to another.
"""

import re
from typing import NamedTuple

_OCTAL = re.compile(r"\\([0-7]{3})")

# Options whose value is a number of seconds of attribute caching.
ATTRIBUTE_CACHE_TIMES = ("acregmin", "acregmax", "acdirmin", "acdirmax")


class MountEntry(NamedTuple):
    """
    One line of C{/proc/mounts}.

    @ivar options: option name to value (C{None} for flags such as
        C{noac}), in the order the kernel listed them.
    """

    device: str
    mountpoint: str
    fstype: str
    options: dict
    dump: int = 0
    passno: int = 0


class MountsProblem(NamedTuple):
    lineno: int
    reason: str


def unescape(field):
    """
    Undo the kernel's octal escapes (C{\\040} for a space, and so on).
    """
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_options(text):
    """
    Parse C{rw,vers=3,noac} into C{{"rw": None, "vers": "3", "noac": None}}.
    """
    options = {}
    for item in text.split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        options[unescape(name)] = unescape(value) if sep else None
    return options


def parse_proc_mounts(text, problems=None):
    """
    Parse the text of C{/proc/mounts}.

    @param problems: if a list, malformed lines are appended to it as
        L{MountsProblem}s; they are skipped either way.
    @return: a list of L{MountEntry}, in file order (later entries are
        mounted on top of earlier ones on the same mount point).
    """
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (4, 6):
            if problems is not None:
                problems.append(MountsProblem(lineno, f"{len(fields)} fields, expected 6"))
            continue
        dump = passno = 0
        if len(fields) == 6:
            if not (fields[4].isdigit() and fields[5].isdigit()):
                if problems is not None:
                    problems.append(MountsProblem(lineno, "dump and pass fields are not numbers"))
                continue
            dump, passno = int(fields[4]), int(fields[5])
        entries.append(
            MountEntry(
                unescape(fields[0]),
                unescape(fields[1]),
                unescape(fields[2]),
                parse_options(fields[3]),
                dump,
                passno,
            )
        )
    return entries


def find_mount(entries, mountpoint):
    """
    Return the entry visible at C{mountpoint} (the last one mounted
    there), or L{None}.
    """
    mountpoint = mountpoint.rstrip("/") or "/"
    found = None
    for entry in entries:
        if (entry.mountpoint.rstrip("/") or "/") == mountpoint:
            found = entry
    return found


def attribute_cache_off(options):
    """
    Whether an NFS mount's options turn the attribute cache off: C{noac},
    C{actimeo=0}, or all four C{ac*} times zero.
    """
    if "noac" in options:
        return True
    if options.get("actimeo") == "0":
        return True
    return all(options.get(name) == "0" for name in ATTRIBUTE_CACHE_TIMES)


def lookup_cache_off(options):
    """
    Whether the NFS lookup (dentry) cache is off: C{lookupcache=none}.
    """
    return options.get("lookupcache") == "none"


def missing_cache_options(options, attributes=True):
    """
    Return the cache-disabling options a per-caller NFS mount lacks, as
    the options an administrator would add (empty when all is well).

    @param attributes: whether the attribute cache must be off too.  A
        server that gives each caller its own file handle for a per-caller
        link (as hlfs does) needs only the lookup cache off: attributes
        are cached per handle.
    """
    missing = []
    if attributes and not attribute_cache_off(options):
        missing.append("noac")
    if not lookup_cache_off(options):
        missing.append("lookupcache=none")
    return missing
