"""
A small world of users for the kernel-client scenarios: a passwd(5) file,
homes with spool directories and an alternate spool, all under one host
directory that the guest sees at the same path.

Every spool holds a file C{.owner} naming whose spool it is, so that a
process opening a path through the link can tell whose directory it
landed in.
"""

import os
from dataclasses import dataclass
from pathlib import Path

SUBDIR = ".mailspool"
OWNER_FILE = ".owner"

#: The group whose members get Table 2 (C{home -> .}, per-user links).
HLFS_GID = 4242


@dataclass(frozen=True)
class User:
    """
    @ivar name: login name.
    @ivar uid: user id.
    @ivar gid: primary group id.
    @ivar home: home directory as written in the password file.
    @ivar usable: whether hlfs should resolve to the home's spool.
    """

    name: str
    uid: int
    gid: int
    home: str
    usable: bool = True


class World:
    """
    Users, their homes and the alternate spool under C{base}.

    @ivar users: L{User}s by name: C{root}, C{alice}, C{bob}, and
        C{carol} whose home is C{/}, which hlfs must refuse.
    @ivar stranger_uid: a uid in no password entry.
    """

    stranger_uid = 5099

    def __init__(self, base):
        self.base = Path(base)
        self.homes = self.base / "home"
        self.alt_dir = self.base / "alt_mail"
        self.password_file = self.base / "passwd"
        self.users = {
            "root": User("root", 0, 0, str(self.homes / "root")),
            "alice": User("alice", 5001, 5001, str(self.homes / "alice")),
            "bob": User("bob", 5002, 5002, str(self.homes / "bob")),
            "carol": User("carol", 5003, 5003, "/", usable=False),
        }

    def create(self):
        """
        Write the password file and build the directories.

        The base and homes are world-searchable: guest processes of every
        user walk through them.
        """
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self.homes.mkdir(exist_ok=True)
        os.chmod(self.homes, 0o755)
        lines = []
        for user in self.users.values():
            lines.append(f"{user.name}:x:{user.uid}:{user.gid}:{user.name}:{user.home}:/bin/sh\n")
            if not user.usable:
                continue
            spool = Path(user.home) / SUBDIR
            spool.mkdir(parents=True, exist_ok=True)
            (spool / OWNER_FILE).write_text(user.name + "\n")
            (spool / user.name).touch()
            for path, mode in ((Path(user.home), 0o755), (spool, 0o755), (spool / OWNER_FILE, 0o644), (spool / user.name, 0o600)):
                os.chown(path, user.uid, user.gid)
                os.chmod(path, mode)
        self.password_file.write_text("".join(lines))
        self.alt_dir.mkdir(exist_ok=True)
        (self.alt_dir / OWNER_FILE).write_text("alt\n")
        os.chmod(self.alt_dir, 0o1777)
        return self

    def link_value(self, uid, egid=None):
        """
        What C{home} must read for a caller, per the paper's Tables 1-3.

        @param uid: the caller's uid.
        @param egid: the caller's effective gid.
        """
        if egid == HLFS_GID or uid == 0:
            # Table 2: HLFS_GID callers, and root, which delivers for all.
            return "."
        for user in self.users.values():
            if user.uid == uid:
                return f"{user.home}/{SUBDIR}" if user.usable else str(self.alt_dir)
        return str(self.alt_dir)

    def mailbox_link(self, name):
        """
        What the per-user link C{NAME} reads for an HLFS_GID caller (Table 2).
        """
        return f"{self.users[name].home}/{SUBDIR}/{name}"

    def owner(self, uid, egid=None):
        """
        The C{.owner} text a caller finds through C{home}.
        """
        value = self.link_value(uid, egid)
        if value == str(self.alt_dir):
            return "alt"
        for user in self.users.values():
            if value == f"{user.home}/{SUBDIR}":
                return user.name
        raise ValueError(f"no owner file behind {value!r}")
