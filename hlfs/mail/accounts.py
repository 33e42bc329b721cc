"""
Password entries with the fields the mail tools need beyond
L{hlfs.core.users.UserTable}: the primary gid (for a delivery agent's
credential switch) and every entry including duplicated uids (for
C{hlfs check}).
"""

import grp
import os
import pwd

from hlfs.core.users import Account, parse_passwd  # noqa: F401 (the mail tools' names)
from hlfs.homes.nss import NameServiceUnavailable, account_by_name  # noqa: F401


def read_passwd(path):
    """
    Parse the password file at C{path}.

    @raise OSError: it cannot be read.
    """
    with open(path, "rb") as f:
        return parse_passwd(f.read())


def nss_accounts():
    """
    Every entry the name service switch enumerates.
    """
    return [
        Account(os.fsencode(p.pw_name), p.pw_uid, p.pw_gid, os.fsencode(p.pw_dir))
        for p in pwd.getpwall()
    ]


def find_account(name, password_file=None):
    """
    Look up one user by name (C{bytes}), in C{password_file} or NSS.

    @return: an L{Account} or L{None}.
    @raise NameServiceUnavailable: the name service could not say (an
        error other than a clean "not found"; Python's C{pwd} would call
        it "no such user").
    @raise OSError: the password file cannot be read.
    """
    if password_file is not None:
        accounts, _ = read_passwd(password_file)
        for account in accounts:
            if account.name == name:
                return account
        return None
    return account_by_name(name)


def supplementary_groups(account, password_file=None):
    """
    The group list for a credential switch: from NSS for NSS users, only
    the primary group for users of a private password file (whose groups
    the system's group database does not know).
    """
    if password_file is not None:
        return [account.gid]
    try:
        return os.getgrouplist(os.fsdecode(account.name), account.gid)
    except OSError:
        return [account.gid]


def parse_group(data):
    """
    Parse group(5) text into C{{name: gid}} (C{bytes} names).
    """
    groups = {}
    for line in data.split(b"\n"):
        fields = line.split(b":")
        if len(fields) >= 3 and fields[0] and fields[2].isdigit():
            groups.setdefault(fields[0], int(fields[2]))
    return groups


def group_gid(name, group_file=None):
    """
    Return the gid of group C{name} (C{str}), or L{None} if it is missing.

    @raise OSError: the group file cannot be read.
    """
    if group_file is not None:
        with open(group_file, "rb") as f:
            return parse_group(f.read()).get(os.fsencode(name))
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
