"""
Pieces of the scenario scripts run in the guest, and the parsing of what
they print.

A scenario prints result lines C{R KEY VALUE...}; everything else in its
output is for people reading a failure.
"""

import os
import re
import shlex

from vm import HOST_FROM_GUEST

#: The export: hlfs exports its mount directory's path, C{/mail} by default.
EXPORT = "/mail"

#: Cache options per the issue: no dentry cache, no attribute cache.
NO_CACHES = ("noac", "lookupcache=none")


def nfs_options(port, vers=3, extra=NO_CACHES, mountport=None):
    """
    The kernel's text mount options for hlfs (or another server whose
    MOUNT program is on C{mountport}) on the host's loopback.

    C{port=}/C{mountport=} keep the kernel from asking a portmapper;
    C{addr=} is mandatory when calling mount(2) directly.
    """
    base = [
        f"vers={vers}",
        "proto=tcp",
        f"port={port}",
        f"mountport={mountport or port}",
        "mountproto=tcp",
        f"addr={HOST_FROM_GUEST}",
        f"mountaddr={HOST_FROM_GUEST}",
        "nolock",
        "ro",
    ]
    return ",".join(base + list(extra))


def daemon_cache_options():
    """
    The cache options of the mount the daemon makes of itself by default
    (L{hlfs.daemon.kernel.DEFAULT_OPTIONS}), and whether it writes
    synchronously, so the scenarios prove what hlfs actually uses.  Options for C{mount.nfs} alone (C{retry=}) are left
    out: the guest calls mount(2) directly.
    """
    from hlfs.daemon.kernel import DEFAULT_OPTIONS

    return tuple(
        option
        for option in DEFAULT_OPTIONS.split(",")
        if option.split("=")[0] in ("lookupcache", "noac", "actimeo", "acregmin", "acregmax", "acdirmin", "acdirmax", "ac", "nocto",
                                    "sync", "async")
    )


def preamble(probe):
    """
    Shell functions every scenario uses: C{up} (guest uptime), C{as}
    (run as UID GID EGID), C{R} (print a result line).
    """
    # The guest runs the host's Python as the tests see it.
    pythonpath = os.environ.get("PYTHONPATH")
    export = f"export PYTHONPATH={shlex.quote(pythonpath)}\n" if pythonpath else ""
    return export + f"""\
set -u
P={shlex.quote(str(probe))}
up() {{ cut -d' ' -f1 /proc/uptime; }}
as() {{ "$P" as "$@"; }}
R() {{ echo "R $*"; }}
"""


def mount(probe_var, target, port, vers=3, extra=NO_CACHES, source=f"{HOST_FROM_GUEST}:{EXPORT}",
          mountport=None):
    """
    Shell lines mounting hlfs (or C{source} on C{port} and C{mountport})
    on C{target}; the scenario exits 10 if the mount fails (the probe
    prints the kernel's reason).
    """
    options = nfs_options(port, vers, extra, mountport)
    return f"""\
mkdir -p {target}
R mount-start.{target} $(up)
"{probe_var}" mount {source} {target} nfs {options} || {{ echo "MOUNT FAILED: {target} {options}"; exit 10; }}
R mounted.{target} $(up)
"""


def spool_link():
    """
    Shell lines making the guest's C{/var/spool/mail} the link to
    C{/mail/home}, as on an hlfs client.
    """
    return "rm -rf /var/spool/mail && ln -s /mail/home /var/spool/mail\n"


def mountstats(tag, mountpoint):
    """
    Shell lines saving the per-operation counts of the NFS mount on
    C{mountpoint} as result lines C{R ops.TAG OP COUNT}.
    """
    return (
        f"awk -v mp={shlex.quote(mountpoint)} -v tag={shlex.quote(tag)} "
        "'$1 == \"device\" { inside = ($5 == mp) } "
        "inside && /^[ \\t]+[A-Z_]+: [0-9]/ { sub(\":\", \"\", $1); print \"R ops.\" tag, $1, $2 }' "
        "/proc/self/mountstats\n"
    )


def results(output):
    """
    Parse C{R KEY VALUE...} lines.

    @return: a dict from key to the rest of the line (a later line for the
        same key replaces an earlier one).
    """
    found = {}
    for line in output.splitlines():
        if line.startswith("R "):
            parts = line[2:].split(" ", 1)
            found[parts[0]] = parts[1] if len(parts) > 1 else ""
    return found


def op_counts(output, tag):
    """
    @return: the NFS operation counts saved by L{mountstats} under C{tag}.
    """
    counts = {}
    for line in output.splitlines():
        match = re.match(rf"R ops\.{re.escape(tag)} (\w+) (\d+)$", line)
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def op_delta(output, before, after):
    """
    @return: per operation, the calls between two L{mountstats} snapshots
        (operations that were not called are left out).
    """
    first, second = op_counts(output, before), op_counts(output, after)
    return {op: n - first.get(op, 0) for op, n in second.items() if n - first.get(op, 0)}


def loop_counts(line):
    """
    Parse a probe result line C{uid=N egid=N ok=N wrong=N errors=N ...}.

    @return: a dict of the numeric fields, plus the C{first_*} strings.
    """
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    return {k: (int(v) if k in ("uid", "egid", "ok", "wrong", "errors") else v) for k, v in fields.items()}
