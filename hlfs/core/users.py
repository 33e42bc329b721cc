"""
The user table: uid and name to home directory, from NSS or a passwd file.

The table is immutable and compact (sorted arrays over one byte blob, a few
dozen bytes per user), so a reload builds a new one in a thread and swaps
it in with one assignment: serving never waits for a reload.
"""

import os
import pwd
from array import array
from bisect import bisect_left
from typing import NamedTuple

MAX_UID = 0xFFFFFFFF


def iter_passwd(data):
    """
    Walk passwd(5) text: yield C{(lineno, fields, None)} for each entry
    with a name and a valid uid, and C{(lineno, None, reason)} for each
    malformed line.  Comments, blank lines and NIS C{+}/C{-} lines are
    skipped.
    """
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line or line[:1] in (b"#", b"+", b"-"):
            continue
        fields = line.split(b":")
        if len(fields) != 7:
            yield lineno, None, f"{len(fields)} fields, expected 7"
        elif not fields[0]:
            yield lineno, None, "empty user name"
        elif not fields[2].isdigit() or int(fields[2]) > MAX_UID:
            yield lineno, None, f"invalid uid {fields[2][:20]!r}"
        else:
            yield lineno, fields, None


class User(NamedTuple):
    """
    One password entry, as hlfs needs it.  Names and paths are C{bytes}:
    they go on the wire as they are.
    """

    name: bytes
    uid: int
    home: bytes


class PasswdProblem(NamedTuple):
    """
    A line of a password file that was skipped, and why.
    """

    path: str
    lineno: int
    reason: str

    def __str__(self):
        return f"{self.path}:{self.lineno}: {self.reason}"


class UserTable:
    """
    An immutable map from uid (and from name) to L{User}.

    Duplicate uids: the first entry wins, except for uid 0, which always
    resolves through the entry named C{root} when there is one (never an
    alias such as C{toor}).

    @ivar problems: the L{PasswdProblem}s met while loading.
    """

    __slots__ = ("_uids", "_offsets", "_blob", "_by_name", "problems", "source")

    def __init__(self, entries=(), problems=(), source="(entries)"):
        """
        @param entries: iterable of C{(name, uid, home)}, names and homes
            as C{bytes}, in password-file order.
        """
        first = {}
        root = None
        for name, uid, home in entries:
            if uid not in first:
                first[uid] = (name, home)
            if uid == 0 and name == b"root" and root is None:
                root = (name, home)
        if root is not None:
            first[0] = root
        uids = sorted(first)
        offsets = array("I")
        blob = bytearray()
        for uid in uids:
            name, home = first[uid]
            offsets.append(len(blob))
            blob += name
            blob += b":"
            blob += home
        offsets.append(len(blob))
        self._uids = array("I", uids)
        self._offsets = offsets
        self._blob = bytes(blob)
        # Positions sorted by name, for the HLFS_GID per-user links.
        self._by_name = array("I", sorted(range(len(uids)), key=self._name_at))
        self.problems = tuple(problems)
        self.source = source

    def _record(self, i):
        return self._blob[self._offsets[i] : self._offsets[i + 1]]

    def _name_at(self, i):
        record = self._record(i)
        return record[: record.index(b":")]

    def _user_at(self, i):
        name, _, home = self._record(i).partition(b":")
        return User(name, self._uids[i], home)

    def __len__(self):
        return len(self._uids)

    def __iter__(self):
        """
        Iterate over the users in uid order.
        """
        for i in range(len(self._uids)):
            yield self._user_at(i)

    def __eq__(self, other):
        if not isinstance(other, UserTable):
            return NotImplemented
        return self._uids == other._uids and self._blob == other._blob

    __hash__ = None

    def index_of(self, uid):
        """
        Return the position of C{uid} in uid order, or -1 if unknown.
        """
        i = bisect_left(self._uids, uid)
        if i < len(self._uids) and self._uids[i] == uid:
            return i
        return -1

    def at(self, i):
        """
        Return the L{User} at position C{i} of uid order.
        """
        return self._user_at(i)

    def by_uid(self, uid):
        """
        Return the L{User} for C{uid}, or L{None}.
        """
        i = self.index_of(uid)
        return None if i < 0 else self._user_at(i)

    def by_name(self, name):
        """
        Return the L{User} named C{name} (C{bytes}), or L{None}.
        """
        order = self._by_name
        j = bisect_left(order, name, key=self._name_at)
        if j < len(order) and self._name_at(order[j]) == name:
            return self._user_at(order[j])
        return None

    def footprint(self):
        """
        Return the bytes held by the table's arrays and blob.
        """
        return (
            self._uids.itemsize * len(self._uids)
            + self._offsets.itemsize * len(self._offsets)
            + self._by_name.itemsize * len(self._by_name)
            + len(self._blob)
        )

    @classmethod
    def from_passwd_file(cls, path):
        """
        Load a passwd(5)-format file.  Only the name, uid and home fields
        are read; malformed lines are skipped and recorded in C{problems}.

        @raise OSError: if the file cannot be read.
        """
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_passwd_bytes(data, os.fsdecode(path))

    @classmethod
    def from_passwd_bytes(cls, data, source="(passwd)"):
        entries = []
        problems = []
        for lineno, fields, reason in iter_passwd(data):
            if reason is None:
                entries.append((fields[0], int(fields[2]), fields[5]))
            else:
                problems.append(PasswdProblem(source, lineno, reason))
        return cls(entries, problems, source)

    @classmethod
    def from_nss(cls):
        """
        Load every entry the name service switch enumerates.
        """
        return cls(
            (
                (os.fsencode(p.pw_name), p.pw_uid, os.fsencode(p.pw_dir))
                for p in pwd.getpwall()
            ),
            source="NSS",
        )
