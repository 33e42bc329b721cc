"""
Password entries with the fields the mail tools need beyond
L{hlfs.core.users.UserTable}: the primary gid (for a delivery agent's
credential switch) and every entry including duplicated uids (for
C{hlfs check}); and which names may name a mailbox.
"""

import grp
import os
import pwd
import re

from hlfs.core.users import Account, parse_passwd  # noqa: F401 (the mail tools' names)
from hlfs.homes.nss import NameServiceUnavailable, account_by_name  # noqa: F401

#: The longest name a mailbox may have (glibc's LOGIN_NAME_MAX, 256 with
#: its NUL, and nslcd's limit alike).
MAX_NAME = 256

# What useradd(8) and nslcd's default validnames make user names of.  No
# "+": it marks NIS entries, and nslcd refuses such names, which glibc then
# reports as an error of the service, not as "no such user".
_PORTABLE_NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.@-]*\Z")


def valid_user_name(name):
    """
    Whether C{name} (C{bytes}) can name a mailbox file: one path
    component, not hidden, not an option, not a lock file.

    C{hlfs deliver} takes any such name from its MTA, which chose the
    recipient, and asks the name service about it.
    """
    return (
        0 < len(name) <= MAX_NAME
        and b"/" not in name
        and b"\0" not in name
        and not name.startswith((b".", b"-"))
        and not name.endswith(b".lock")
    )


def plausible_user_name(name):
    """
    Whether a name found in a spool every user may write may name a
    mailbox: a L{valid_user_name} spelt as user names are.

    C{hlfs lostmail} asks the name service only about these: a name
    nslcd refuses would make glibc report an error of the service, and
    so fail every run, rather than "no such user".
    """
    return valid_user_name(name) and _PORTABLE_NAME.match(name) is not None


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
