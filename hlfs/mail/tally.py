"""
What one run of C{hlfs lostmail} did, user by user: the summary it prints.
"""

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
