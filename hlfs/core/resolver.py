"""
What the home link means for a uid: the password table plus the spool
rules of the paper's Figure 1, without any I/O.

The resolver that answers (L{hlfs.homes.resolver.HomeResolver}) adds the check
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

    def mailbox(name, wait=True):
        """
        Return the L{Resolution} of user C{name}'s mailbox link
        (C{~NAME/<subdir>/NAME}, or the alternate spool's C{NAME} while
        NAME's home is unusable), a Deferred that fires with one (C{NAME}'s
        home is being checked, as for C{resolve}), or L{None} for an unknown
        user.  With C{wait} false, the last known answer, at once.
        """

    def find_mailbox(name):
        """
        Like L{mailbox}, and for a name the resolver does not know yet,
        ask for it (within the deadline): a L{Resolution}, L{None}, or a
        Deferred firing with one of them.
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

    def __init__(self, subdir, alt_dir, uid_min=0):
        """
        @param uid_min: the lowest uid of a login account (C{UID_MIN} of
            login.defs(5)); accounts under it but root are system accounts.
        """
        self.subdir = subdir
        self.alt_dir = alt_dir
        self.uid_min = uid_min

    #: Why a link is the alternate spool by these rules alone (L{reason}).
    UNKNOWN = "unknown user"
    SYSTEM = "system account"
    HOME_ROOT = "home /"
    HOME_RELATIVE = "relative home"

    def reason(self, user):
        """
        Why C{user}'s mail goes to the alternate spool whatever its home
        holds, or L{None} when it goes to C{~user/<subdir>} (once the home
        is found usable): L{UNKNOWN}, L{SYSTEM} (uid under C{uid_min}, root
        excepted), L{HOME_ROOT} or L{HOME_RELATIVE}.

        System accounts are the mail system's own (C{postfix},
        C{Debian-exim}, C{mail}): a spool of theirs in their home would make
        Postfix's local(8), which looks at the spool directory as the mail
        owner, find it unwritable and open mailboxes as root.  The sticky,
        world-writable alternate spool makes it deliver as the recipient.
        C{hlfs check} warns from the same answers.
        """
        if user is None:
            return self.UNKNOWN
        if self.system_account(user.uid):
            return self.SYSTEM
        home = user.home.rstrip(b"/")
        if not home and user.home:
            return self.HOME_ROOT
        if not home.startswith(b"/"):
            return self.HOME_RELATIVE
        return None

    def system_account(self, uid):
        """
        Whether C{uid} is a system account's: under C{uid_min}, root
        excepted.
        """
        return 0 < uid < self.uid_min

    def spool_of(self, user):
        """
        Return C{~user/<subdir>}, or L{None} when the user's mail goes to
        the alternate spool (L{reason}).
        """
        if self.reason(user) is not None:
            return None
        return user.home.rstrip(b"/") + b"/" + self.subdir

    def mailbox_of(self, user):
        spool = self.spool_of(user)
        if spool is None:
            return self.alt_dir + b"/" + user.name
        return spool + b"/" + user.name
