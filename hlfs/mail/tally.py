"""
What one run of C{hlfs lostmail} did, user by user: the summary it prints.
"""

from collections import Counter

from hlfs.core.resolver import SpoolRules
from hlfs.mail.maillog import show


class Tally:
    """
    Per-user counts of messages found, resent and failed.
    """

    def __init__(self):
        self.users = {}

    def add(self, user, found=0, resent=0, failed=0):
        counts = self.users.setdefault(user, [0, 0, 0])
        counts[0] += found
        counts[1] += resent
        counts[2] += failed

    def failed(self):
        return sum(c[2] for c in self.users.values())

    def lines(self):
        total = [0, 0, 0]
        for user in sorted(self.users):
            found, resent, failed = self.users[user]
            total = [total[0] + found, total[1] + resent, total[2] + failed]
            yield f"{show(user)}: {found} found, {resent} resent, {failed} failed"
        yield f"total: {total[0]} found, {total[1]} resent, {total[2]} failed"


def resident_line(resident, uid_min):
    """
    The summary line of the mailboxes left as their owners' own:
    C{resident} maps each name to its L{SpoolRules} reason.
    """
    labels = {SpoolRules.SYSTEM: f"system accounts, uid under uid-min {uid_min}",
              SpoolRules.HOME_ROOT: "home /", SpoolRules.HOME_RELATIVE: "relative home"}
    counts = Counter(resident.values())
    details = "; ".join(f"{label}: {counts[reason]}" for reason, label in labels.items()
                        if counts[reason])
    return (f"left in the alternate spool, their owners' mailbox by hlfs's rules: "
            f"{len(resident)} ({details})")
