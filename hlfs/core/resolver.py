"""
What the home link means for a uid: the password table plus the spool
rules of the paper's Figure 1, without any I/O.

The resolver that answers (L{hlfs.homes.cache.ProbingResolver}) adds the check
that the spool directory is writable, or skips it for hlfsd's C{-n}.
"""

from typing import NamedTuple

from zope.interface import Attribute, Interface


class Resolution(NamedTuple):
    """
    A link value and the time (ns) it last changed for its caller.  The
    link's mtime and ctime come from C{changed}, so a client that cached
    the old value sees new attributes and reads the link again.
    """

    target: bytes
    changed: int


class ILinkResolver(Interface):
    def resolve(uid):
        """
        Return the L{Resolution} of the home link for caller C{uid}, or a
        Deferred that fires with one (it never fails).
        """

    def peek(uid):
        """
        Return the last known L{Resolution} for C{uid} without waiting.
        """

    def mailbox(name):
        """
        Return the L{Resolution} of user C{name}'s mailbox link
        (C{~NAME/<subdir>/NAME}), or L{None} for an unknown user.
        """

    def valid_until(uid):
        """
        Return the time (clock seconds) until which C{resolve(uid)} will
        answer as it does now without any I/O, unless C{generation} moves;
        0 when the next call may need to check the home.
        """

    generation = Attribute(
        "A number that changes whenever any answer may have changed "
        "(a reload, a flushed cache, a link that points elsewhere now)."
    )


class ChangeClock:
    """
    Strictly increasing nanosecond timestamps from a reactor-style clock
    (anything with C{seconds()}), so two changes never share a ctime.
    """

    def __init__(self, clock):
        self.clock = clock
        self.last = 0

    def now(self):
        stamp = max(int(self.clock.seconds() * 1e9), self.last + 1)
        self.last = stamp
        return stamp


class SpoolRules:
    """
    The pure part of the policy: which path a user's link would point to
    if the home is usable, and the fallback when it is not.
    """

    def __init__(self, subdir, alt_dir):
        self.subdir = subdir
        self.alt_dir = alt_dir

    def spool_of(self, user):
        """
        Return C{~user/<subdir>}, or L{None} when the user is unknown or the
        home is C{/} or relative (those get the alternate spool).
        """
        if user is None:
            return None
        home = user.home.rstrip(b"/")
        if not home.startswith(b"/"):
            return None
        return home + b"/" + self.subdir

    def mailbox_of(self, user):
        spool = self.spool_of(user)
        if spool is None:
            return self.alt_dir + b"/" + user.name
        return spool + b"/" + user.name
