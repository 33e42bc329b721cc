"""
One user at a time from the name service switch, telling "no such user"
from "could not ask".

Python's C{pwd.getpwuid} raises C{KeyError} for both: a user the
directory does not have, and a directory that is down, hung or
unreachable.  Mail must never go to someone else because of the second,
so these lookups call C{getpwuid_r}/C{getpwnam_r} through ctypes and
read their return value.  glibc answers a clean "not found" with 0 and
no entry; any other value is an error of the service (libnss-ldapd
answers C{ENOENT} when nslcd cannot reach its server, which POSIX lists
among the "not found" codes, so no non-zero value is taken for one).

The calls let go of the GIL while the service waits and may block as
long as it does: call them in a thread, never in the reactor thread.

L{FilesAccounts} reads C{/etc/passwd} and C{/etc/group} themselves, so
that a local user's groups never wait for a directory.
"""

import ctypes
import errno
import os

from hlfs.core.users import Account, parse_passwd


class NameServiceUnavailable(OSError):
    """
    The name service could not be asked (an error other than a clean
    "not found"): nothing is known about the user.
    """


class _Passwd(ctypes.Structure):
    _fields_ = [
        ("pw_name", ctypes.c_char_p),
        ("pw_passwd", ctypes.c_char_p),
        ("pw_uid", ctypes.c_uint),
        ("pw_gid", ctypes.c_uint),
        ("pw_gecos", ctypes.c_char_p),
        ("pw_dir", ctypes.c_char_p),
        ("pw_shell", ctypes.c_char_p),
    ]


def _load():
    # The C library this Python already uses (dlopen(NULL)), not found by
    # name: ctypes.util's imports cost every check process 2.6 MB.
    libc = ctypes.CDLL(None, use_errno=True)
    result = ctypes.POINTER(ctypes.POINTER(_Passwd))
    by_uid = libc.getpwuid_r
    by_uid.argtypes = [ctypes.c_uint, ctypes.POINTER(_Passwd), ctypes.c_char_p, ctypes.c_size_t, result]
    by_name = libc.getpwnam_r
    by_name.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Passwd), ctypes.c_char_p, ctypes.c_size_t, result]
    by_uid.restype = by_name.restype = ctypes.c_int
    grouplist = libc.getgrouplist
    grouplist.argtypes = [
        ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_int),
    ]
    grouplist.restype = ctypes.c_int
    return by_uid, by_name, grouplist


_getpwuid_r, _getpwnam_r, _getgrouplist = _load()


def _lookup(call, key, what):
    size = 1024
    while True:
        entry = _Passwd()
        found = ctypes.POINTER(_Passwd)()
        buf = ctypes.create_string_buffer(size)
        err = call(key, ctypes.byref(entry), buf, size, ctypes.byref(found))
        if err == errno.ERANGE and size < 1 << 20:
            size *= 4
            continue
        if err != 0:
            raise NameServiceUnavailable(err, f"{what}: {os.strerror(err)}")
        if not found:
            return None
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or b"")


def account_by_uid(uid):
    """
    Return the L{Account} of C{uid} from the name service, or L{None} if
    it has no such user.

    @raise NameServiceUnavailable: if the name service could not say.
    """
    return _lookup(_getpwuid_r, uid, f"getpwuid_r({uid})")


def account_by_name(name):
    """
    Return the L{Account} named C{name} (C{bytes}), or L{None}.

    @raise NameServiceUnavailable: if the name service could not say.
    """
    if b"\0" in name:
        return None
    return _lookup(_getpwnam_r, name, f"getpwnam_r({os.fsdecode(name)!r})")


def group_list(name, gid):
    """
    Return the groups of user C{name} (C{bytes}) from the name service,
    C{gid} among them, as a tuple.  May ask every source of C{group:}
    in nsswitch.conf, the directory included.
    """
    count = 64
    while True:
        groups = (ctypes.c_uint * count)()
        n = ctypes.c_int(count)
        if _getgrouplist(name, gid, groups, ctypes.byref(n)) >= 0:
            return tuple(groups[: n.value])
        if n.value <= count:  # no growth asked for: give up on extras
            return (gid,)
        count = n.value


class FilesAccounts:
    """
    The users of C{/etc/passwd} and their groups from C{/etc/group}, read
    from the files: what glibc's C{files} source answers, without asking
    any other source.
    """

    def __init__(self, passwd="/etc/passwd", group="/etc/group"):
        self.passwd = passwd
        self.group = group
        self._by_uid = {}
        self._groups = {}
        self.reload()

    def reload(self):
        """
        Read the files again; a file that cannot be read counts as empty
        (its users are then asked for like directory users).
        """
        try:
            with open(self.passwd, "rb") as f:
                accounts, _ = parse_passwd(f.read())
        except OSError:
            accounts = []
        by_uid = {}
        for account in accounts:
            by_uid.setdefault(account.uid, account)
        groups = {}
        try:
            with open(self.group, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        for line in data.split(b"\n"):
            fields = line.split(b":")
            if len(fields) < 4 or not fields[2].isdigit():
                continue
            gid = int(fields[2])
            for member in fields[3].split(b","):
                if member:
                    groups.setdefault(member, []).append(gid)
        self._by_uid = by_uid
        self._groups = groups

    def credentials(self, name, uid):
        """
        Return C{(uid, gid, groups)} of a local user, or L{None} if the
        files have no user C{name} with that uid.
        """
        account = self._by_uid.get(uid)
        if account is None or account.name != name:
            return None
        extra = [g for g in self._groups.get(name, ()) if g != account.gid]
        return uid, account.gid, (account.gid, *dict.fromkeys(extra))

    def uids(self):
        """
        Return the set of uids of C{/etc/passwd}.
        """
        return set(self._by_uid)


class NameService:
    """
    The name service asked for one user at a time, by name, whether or
    not it enumerates: the mail tools' user source.  Answers (found and
    not found) are kept for the object's life, one run of a tool;
    L{NameServiceUnavailable} is raised again at each call, never kept.
    """

    source = "NSS"

    def __init__(self):
        self._known = {}

    def by_name(self, name):
        """
        Return the L{Account} named C{name} (C{bytes}), or L{None}.

        @raise NameServiceUnavailable: if the name service could not say.
        """
        try:
            return self._known[name]
        except KeyError:
            pass
        account = account_by_name(name)
        self._known[name] = account
        return account
