"""
The daemon's file descriptors, and the status report of every limit on
what clients can make it hold.

Each TCP connection holds a descriptor; home checks, table loads (a child
process and its pipes), reloads and the log need some too.  hlfs raises
its soft C{RLIMIT_NOFILE} to the hard limit and lets connections take all
but a reserve, so those never meet C{EMFILE} however many clients connect.
"""

import os
import resource


def raise_nofile():
    """
    Raise the soft file descriptor limit as far as the hard one allows and
    return the soft limit then in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite limit; nr_open is its ceiling.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def limits_report(limits, stats, replies, nofile, fd_reserve):
    """
    Name/value pairs for `hlfs status`: each limit in force (C{limit.*}),
    how often it refused or closed something (C{refused.*}), and the
    counts it bounds.
    """
    pairs = [
        ("connections", stats.connections),
        ("connections_unprivileged", stats.unprivileged),
        ("connections_paused", stats.paused),
        ("fds_open", open_fds()),
        ("limit.nofile", nofile),
        ("limit.fd_reserve", fd_reserve),
    ]
    pairs += [(f"limit.{name}", value) for name, value in vars(limits).items()]
    pairs += [
        ("limit.reply_cache_entries", replies.size),
        ("limit.reply_cache_bytes", replies.max_bytes),
        ("reply_cache_entries", len(replies.entries)),
        ("reply_cache_bytes", replies.bytes),
    ]
    pairs += [(f"refused.{bound}", count) for bound, count in stats.refused.items()]
    pairs.append(("refused.reply_cache_full", replies.resets))
    return pairs
