"""
C{hlfs check}: find the configuration problems hlfs cannot fix itself.

  - uids shared by password entries with different homes (hlfs keys
    homes by uid, so which home such a uid gets is arbitrary: mail may be
    delivered to or read from either);
  - homes that are C{/} or not absolute, by the daemon's own rules
    (L{SpoolRules}): such users get the alternate spool for good, while
    system accounts (under C{--uid-min}) get it by design and are not
    warned about;
  - a mail owner (C{postfix}, C{Debian-exim}, C{mail}) whose link would
    point into its home: Postfix's local(8) then finds that spool
    unwritable and opens every mailbox as root;
  - a missing HLFS group (its members see every user's mailbox link);
  - a mount point that is not world readable and searchable (C{getwd()}
    fails under it) and an alternate spool that is not mode 1777;
  - delivery agents known to fail as root (L{hlfs.cli.agentcheck}:
    sendmail's mail.local as its local mailer);
  - when hlfs is mounted, client caches left on: with lookup caching
    (and, for a server without per-caller link handles, attribute
    caching), the kernel may hand one user's link to the next user.

The checks are pure functions over data; L{main} gathers the data.
Exit status 0 means nothing was found, 1 that something was.
"""

import argparse
import os
import stat
import sys
from collections import defaultdict

from hlfs.cli import agentcheck
from hlfs.core.resolver import SpoolRules
from hlfs.daemon import mounts
from hlfs.daemon.config import DEFAULT_UID_MIN, ConfigError, check_uid, login_defs_uid_min
from hlfs.homes import nss
from hlfs.mail import accounts
from hlfs.mail.maillog import show

#: The accounts MTAs run their delivery agents as (Postfix's mail_owner,
#: Debian's Exim user, the traditional mail user).
MAIL_OWNERS = (b"postfix", b"Debian-exim", b"exim", b"mail")

EX_OK = 0
EX_FOUND = 1
EX_USAGE = 64

DEFAULT_GROUP = "hlfs"
DEFAULT_MOUNT_POINT = "/mail"
DEFAULT_ALT_DIR = "/var/alt_mail"
DEFAULT_PROC_MOUNTS = "/proc/mounts"


def check_accounts(entries, rules):
    """
    Warn where the daemon's own rules (C{rules}, its L{SpoolRules}) give a
    user the alternate spool for good, whatever its home holds: a home of
    C{/} or a relative one.  System accounts (under C{--uid-min}) always get
    the alternate spool and their homes are never looked at, so nothing is
    said of them, nor of a uid they share.

    @param entries: L{accounts.Account}s in password-file order.
    @return: warning lines.
    """
    warnings = []
    homes = defaultdict(list)
    for entry in entries:
        reason = rules.reason(entry)
        if reason == rules.SYSTEM:
            continue
        homes[entry.uid].append(entry)
        if reason == rules.HOME_ROOT:
            warnings.append(
                f"user {show(entry.name)} (uid {entry.uid}) has home /: hlfs gives it the "
                "alternate spool, so its mail never reaches a home"
            )
        elif reason == rules.HOME_RELATIVE:
            warnings.append(
                f"user {show(entry.name)} (uid {entry.uid}) has a relative home "
                f"'{show(entry.home)}': hlfs gives it the alternate spool, so its mail never "
                "reaches a home"
            )
    for uid in sorted(homes):
        distinct = {e.home for e in homes[uid]}
        if len(distinct) > 1:
            listed = ", ".join(f"{show(e.name)} ({show(e.home)})" for e in homes[uid])
            warnings.append(
                f"uid {uid} is shared by entries with different homes: {listed}; "
                "hlfs uses one of them for all"
            )
    return warnings


def check_mail_owners(entries, uid_min):
    """
    @param uid_min: hlfs's C{--uid-min}: accounts under it get the
        alternate spool.
    @return: a warning line per mail owner whose C{home} link would point
        into its home rather than at the alternate spool.
    """
    rules = SpoolRules(b".mailspool", b"", uid_min)
    warnings = []
    for entry in entries:
        if entry.name in MAIL_OWNERS and entry.uid != 0 and rules.spool_of(entry) is not None:
            warnings.append(
                f"mail owner {show(entry.name)} (uid {entry.uid}, not under --uid-min"
                f" {uid_min}) gets a spool in its home {show(entry.home)}: an MTA that checks"
                " the spool as this user (Postfix local(8)) finds it unwritable and opens"
                " mailboxes as root; give it a uid under UID_MIN"
            )
    return warnings


def passwd_sources(nsswitch_text):
    """
    Return the sources of the C{passwd:} line of nsswitch.conf(5) text,
    without their C{[STATUS=action]} items.
    """
    for line in nsswitch_text.splitlines():
        key, _, rest = line.partition("#")[0].partition(":")
        if key.strip() == "passwd":
            return [w for w in rest.split() if not w.startswith("[")]
    return ["files"]


def check_enumeration(entries, local_uids, sources):
    """
    Say how many users the name service listed, and warn when the list
    looks partial: a directory among the sources that listed nobody
    (enumeration off, or unreachable), or exactly a round number (a size
    limit).

    @param local_uids: the uids of C{/etc/passwd}.
    @return: C{(warnings, notes)}.
    """
    others = [s for s in sources if s not in ("files", "compat", "systemd")]
    listed = sum(1 for e in entries if e.uid not in local_uids)
    notes = [f"{len(entries)} users seen through the name service "
             f"({len(entries) - listed} local, {listed} from {' '.join(others) or 'no other source'})"]
    warnings = []
    if others and listed == 0:
        warnings.append(
            f"the name service listed no user beyond /etc/passwd although passwd: uses "
            f"{' '.join(others)}: enumeration is off or the directory did not answer; hlfs asks "
            "for those users one at a time, check one with --user NAME"
        )
    elif others and listed >= 100 and listed % 100 in (0, 99):
        warnings.append(
            f"the directory listed {listed} users, a round number: a size limit (slapd's default "
            "is 500, Active Directory's 1000) may have cut the list; hlfs asks for the others one "
            "at a time, check one with --user NAME"
        )
    return warnings, notes


def check_user(name, lookup, rules, sources=()):
    """
    Look up one user (C{bytes}) with C{lookup} (L{hlfs.homes.nss.account_by_name})
    and check its entry by the daemon's C{rules}; C{sources} are those of
    C{passwd:}.

    @return: C{(warnings, notes)}.
    """
    try:
        account = lookup(name)
    except nss.NameServiceUnavailable as e:
        return [f"user {show(name)}: the name service could not be asked ({e.strerror})"], []
    if account is None:
        if "sss" in sources:
            # sssd offline answers a clean "not found" for every user it
            # has not cached: nothing in the answer tells it apart.
            return [f"user {show(name)}: no such user, or none in sssd's cache: while sssd "
                    "cannot reach its directory (offline) it answers so for every user it "
                    "has not cached"], []
        return [f"user {show(name)}: no such user"], []
    notes = [f"user {show(name)}: uid {account.uid}, home {show(account.home)}"]
    if rules.reason(account) == rules.SYSTEM:
        notes.append(f"user {show(name)} is a system account (uid under --uid-min "
                     f"{rules.uid_min}): hlfs gives it the alternate spool")
    return check_accounts([account], rules), notes


def _sources(nsswitch):
    try:
        with open(nsswitch, encoding="utf-8", errors="replace") as f:
            return passwd_sources(f.read())
    except OSError:
        return ["files"]


def check_group(name, gid):
    if gid is None:
        return [
            f"group {name!r} does not exist: create it for programs that must "
            "see every user's mailbox (comsat, from, finger)"
        ]
    return []


def check_mount_point(path, st):
    """
    @param st: C{os.stat} result of C{path}, or the C{OSError} met.
    """
    if isinstance(st, OSError):
        return [f"mount point {path}: {st.strerror}"]
    if not stat.S_ISDIR(st.st_mode):
        return [f"mount point {path} is not a directory"]
    if st.st_mode & 0o005 != 0o005:
        return [
            f"mount point {path} has mode {stat.S_IMODE(st.st_mode):04o}: it must be "
            "world readable and searchable, or getwd() fails beneath it"
        ]
    return []


def check_alt_dir(path, st):
    """
    @param st: C{os.lstat} result of C{path}, or the C{OSError} met.
    """
    if isinstance(st, OSError):
        return [f"alternate spool {path}: {st.strerror}"]
    if stat.S_ISLNK(st.st_mode):
        return [f"alternate spool {path} is a symbolic link; make it a directory"]
    if not stat.S_ISDIR(st.st_mode):
        return [f"alternate spool {path} is not a directory"]
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o1777:
        return [f"alternate spool {path} has mode {mode:04o}, expected 1777"]
    return []


def check_mount(mount_point, entry, require_noac=False):
    """
    @param entry: the L{mounts.MountEntry} at the mount point, or L{None}.
    @param require_noac: whether an attribute cache left on is a problem
        (it is for servers that give every caller the same handle for the
        link; hlfs gives each caller its own, so only the lookup cache
        matters).
    @return: C{(warnings, notes)}.
    """
    if entry is None:
        return [], [f"nothing is mounted on {mount_point}; mount checks skipped"]
    if not entry.fstype.startswith("nfs"):
        return [f"{mount_point} is a {show(entry.fstype)} mount, not hlfs (NFS)"], []
    notes = []
    missing = mounts.missing_cache_options(entry.options, attributes=require_noac)
    if missing:
        return [
            f"{mount_point} is mounted with client caches on; "
            f"remount with {','.join(missing)} or users may get each other's link"
        ], []
    if "ro" in entry.options:
        return [
            f"{mount_point} is mounted read-only: delivery agents running as root write the "
            "real mailboxes they find there, and get EROFS; remount it rw (hlfs's own mount is)"
        ], []
    if "sync" not in entry.options and "noac" not in entry.options:
        # noac makes the client's writes synchronous too (nfs(5)).
        return [
            f"{mount_point} is mounted without sync: a full home then fails a root delivery "
            "agent's write only at fsync or close, which some ignore (OpenSMTPD's mail.local "
            "reports the message delivered, half written); remount it sync (hlfs's own mount is)"
        ], []
    if mounts.attribute_cache_off(entry.options):
        notes.append(f"{mount_point}: {show(entry.device)} mounted with the lookup and attribute caches off")
    else:
        notes.append(
            f"{mount_point}: {show(entry.device)} mounted with the lookup cache off; the "
            "attribute cache is on, which per-caller link handles make safe"
        )
    return [], notes


def build_parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog, description="Check the system for hlfs configuration problems."
    )
    parser.add_argument("--password-file", metavar="FILE",
                        help="check this passwd(5) file instead of NSS")
    parser.add_argument("--user", metavar="NAME",
                        help="check this one user, asked for by name (as hlfs does for a "
                        "user the list lacks), instead of every user the name service lists")
    parser.add_argument("--nsswitch", default="/etc/nsswitch.conf", metavar="FILE",
                        help="read the passwd: sources from this file (default %(default)s)")
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help=f"the HLFS group name (default {DEFAULT_GROUP})")
    parser.add_argument("--group-file", metavar="FILE",
                        help="look the group up in this group(5) file instead of NSS")
    parser.add_argument("--mount-point", default=DEFAULT_MOUNT_POINT,
                        help=f"(default {DEFAULT_MOUNT_POINT})")
    parser.add_argument("--alt-dir", default=DEFAULT_ALT_DIR,
                        help=f"alternate spool (default {DEFAULT_ALT_DIR})")
    parser.add_argument("--proc-mounts", default=DEFAULT_PROC_MOUNTS, metavar="FILE",
                        help=f"mount table to read (default {DEFAULT_PROC_MOUNTS})")
    parser.add_argument("--uid-min", default=None, metavar="UID",
                        help="hlfs's --uid-min (default: UID_MIN of /etc/login.defs, else 1000)")
    parser.add_argument("--require-noac", action="store_true",
                        help="also warn when the attribute cache is on (for servers "
                        "without per-caller link handles)")
    return parser


def _stat(function, path):
    try:
        return function(path)
    except OSError as e:
        return e


def gather(options):
    """
    Run every check against the live system.

    @return: C{(warnings, notes)}.
    """
    warnings = []
    notes = []
    try:
        uid_min = (login_defs_uid_min() if options.uid_min is None
                   else check_uid("--uid-min", options.uid_min))
    except ConfigError as e:
        warnings.append(str(e))
        uid_min = None
    # The daemon's own rules: what it gives each user, said the same way.
    rules = SpoolRules(b".mailspool", os.fsencode(options.alt_dir),
                       uid_min if uid_min is not None else DEFAULT_UID_MIN)
    try:
        if options.password_file:
            entries, problems = accounts.read_passwd(options.password_file)
            warnings += [f"{options.password_file}:{n}: {why}" for n, why in problems]
            if options.user:
                entries = [e for e in entries if e.name == os.fsencode(options.user)]
                if not entries:
                    warnings.append(f"user {options.user}: no such user")
            warnings += check_accounts(entries, rules)
            notes.append(f"{len(entries)} password entries checked")
        elif options.user:
            more, extra = check_user(os.fsencode(options.user), nss.account_by_name, rules,
                                     _sources(options.nsswitch))
            warnings += more
            notes += extra
        else:
            entries = accounts.nss_accounts()
            warnings += check_accounts(entries, rules)
            sources = _sources(options.nsswitch)
            more, extra = check_enumeration(entries, nss.FilesAccounts().uids(), sources)
            warnings += more
            notes += extra
        if not options.user and uid_min is not None:
            warnings += check_mail_owners(entries, uid_min)
    except OSError as e:
        warnings.append(f"cannot read {options.password_file}: {e.strerror}")
    try:
        warnings += check_group(options.group, accounts.group_gid(options.group, options.group_file))
    except OSError as e:
        warnings.append(f"cannot read {options.group_file}: {e.strerror}")
    warnings += check_mount_point(options.mount_point, _stat(os.stat, options.mount_point))
    warnings += check_alt_dir(options.alt_dir, _stat(os.lstat, options.alt_dir))
    warnings += agentcheck.check_agents()
    try:
        with open(options.proc_mounts, encoding="utf-8", errors="surrogateescape") as f:
            table = mounts.parse_proc_mounts(f.read())
    except OSError as e:
        warnings.append(f"cannot read {options.proc_mounts}: {e.strerror}")
    else:
        more, extra = check_mount(
            options.mount_point, mounts.find_mount(table, options.mount_point),
            options.require_noac,
        )
        warnings += more
        notes += extra
    return warnings, notes


def main(argv, prog="hlfs check"):
    parser = build_parser(prog)
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return EX_OK if not e.code else EX_USAGE
    warnings, notes = gather(options)
    for note in notes:
        print(f"{prog}: {note}")
    for warning in warnings:
        print(f"{prog}: warning: {warning}")
    if warnings:
        print(f"{prog}: {len(warnings)} problem(s) found")
        return EX_FOUND
    print(f"{prog}: no problems found")
    return EX_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
