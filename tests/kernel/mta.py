"""
Shell pieces that set up and drive real MTAs (Debian's Postfix and Exim)
and a real mail reader (s-nail) inside the guest, from the unpacked
package trees of L{debcache}.

What a package's maintainer scripts would do is done here by hand:
accounts, the configuration files Debian generates, queue directories.
Everything else is the package's default.
"""

import os
import shlex
import sys

#: Accounts the MTAs run as, below the default UID_MIN (1000) as Debian
#: makes them.  Fixed ids so the host's hlfs sees the same numbers.
POSTFIX_UID = 901
POSTDROP_GID = 902
EXIM_UID = 903
MAIL_GID = 8

#: The host name the guest's MTAs use; mail to NAME@it is local.
MAIL_HOST = "hlfs-guest"


def install(tree):
    """
    Shell lines copying an unpacked package tree over the guest's root.
    """
    # Debian's / has /lib -> usr/lib: keep such links, as dpkg does.
    return (
        f"tar -C {shlex.quote(str(tree))} --exclude ./.complete -cf - . |"
        " tar -C / --keep-directory-symlink -xf - || { echo 'INSTALL FAILED'; exit 11; }\n"
    )


def accounts(users):
    """
    Shell lines adding the world's users (not root) and the MTAs' own
    accounts to the guest's password and group files.

    @param users: L{world.User}s.
    """
    lines = []
    for user in users:
        if user.uid == 0:
            continue
        lines.append(f"{user.name}:x:{user.uid}:{user.gid}:{user.name}:{user.home}:/bin/sh")
    lines += [
        f"postfix:x:{POSTFIX_UID}:{POSTFIX_UID}::/var/spool/postfix:/usr/sbin/nologin",
        f"Debian-exim:x:{EXIM_UID}:{EXIM_UID}::/var/spool/exim4:/usr/sbin/nologin",
    ]
    groups = [f"{u.name}:x:{u.gid}:" for u in users if u.uid != 0]
    groups += [f"postfix:x:{POSTFIX_UID}:", f"postdrop:x:{POSTDROP_GID}:", f"Debian-exim:x:{EXIM_UID}:"]
    return (
        "cat >> /etc/passwd <<'EOF'\n" + "\n".join(lines) + "\nEOF\n"
        "cat >> /etc/group <<'EOF'\n" + "\n".join(groups) + "\nEOF\n"
    )


def mail_link():
    """
    Shell lines making both spool paths the link to C{/mail/home}, as on
    an hlfs client (Debian's MTAs use C{/var/mail}).
    """
    return "rm -rf /var/mail /var/spool/mail && ln -s /mail/home /var/mail && ln -s /mail/home /var/spool/mail\n"


def postfix_setup(settings=()):
    """
    Shell lines configuring Postfix as Debian's postinst does for a local
    ("Local only") site, plus C{settings} (C{postconf -e} arguments), with
    verbose logging of local(8) so the log says which uid opened each
    mailbox.

    Departures from the package defaults, none about delivery: no chroot
    (the guest has no copies of C{/etc} files in the queue directory),
    loopback only, a log file instead of syslog.
    """
    conf = [
        f"myhostname={MAIL_HOST}",
        f"mydestination=$myhostname, {MAIL_HOST}.localdomain, localhost.localdomain, localhost",
        "inet_interfaces=loopback-only",
        "inet_protocols=ipv4",
        "maillog_file=/var/log/postfix.log",
        "smtputf8_enable=no",
        *settings,
    ]
    return f"""\
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf
printf 'postmaster: root\\n' > /etc/aliases
postconf -e {' '.join(shlex.quote(c) for c in conf)}
postconf -F '*/*/chroot = n'
postconf -F 'local/unix/command = local -v'
postfix set-permissions >/dev/null 2>&1
postfix post-install create-missing >/dev/null 2>&1
newaliases
postfix check
"""


def postfix_start():
    return 'postfix start >/dev/null 2>&1 || { echo "POSTFIX START FAILED"; cat /var/log/postfix.log; exit 12; }\n'


def wait_deliveries(count, timeout=180, log="/var/log/postfix.log",
                    pattern="postfix/local\\[.*status=", queue="postqueue -p", key="deliveries"):
    """
    Shell lines waiting until the log has C{count} delivery results
    (lines matching the extended regular expression C{pattern}; for
    Postfix's local(8): sent, deferred or bounced), then printing the
    queue; the result line's key is C{key}.
    """
    return f"""\
n=0
while [ "$(grep -c -E '{pattern}' {log} 2>/dev/null)" -lt {count} ] && [ $n -lt {timeout * 5} ]; do
    sleep 0.2
    n=$((n + 1))
done
R {key} $(grep -c -E '{pattern}' {log})
{queue}
"""


def message(sender, recipient, subject):
    return f"From: {sender}\nTo: {recipient}\nSubject: {subject}\n\nbody of {subject}\nFrom the middle of a line\n"


def sendmail(sender, recipient, subject, sendmail="/usr/sbin/sendmail"):
    """
    Shell lines submitting a message with the MTA's own C{sendmail}.
    """
    text = message(sender, recipient, subject)
    return f"printf %s {shlex.quote(text)} | {sendmail} -f {sender} {recipient}; R sendmail.{subject} $?\n"


def smtp(sender, recipient, subject, python):
    """
    Shell lines sending a message over SMTP to 127.0.0.1:25 with Python's
    smtplib (the host's Python, as the guest sees it).
    """
    text = message(sender, recipient, subject)
    code = (
        "import smtplib,sys\n"
        "s = smtplib.SMTP('127.0.0.1', 25, timeout=60)\n"
        "r = s.sendmail(sys.argv[1], [sys.argv[2]], sys.argv[3])\n"
        "s.quit()\n"
        "print(len(r))\n"
    )
    return (
        f"{python} -c {shlex.quote(code)} {sender} {recipient} {shlex.quote(text)} > /tmp/smtp.out 2>&1;"
        f" R smtp.{subject} $? $(tail -1 /tmp/smtp.out)\n"
    )



def exim_setup():
    """
    Shell lines configuring Exim as Debian's exim4-config does for a
    "local delivery only" site (update-exim4.conf.conf as debconf writes
    it), with Debian's default local delivery, the C{mail_spool}
    appendfile transport; then the daemon, listening on 127.0.0.1:25.
    """
    conf = "\n".join([
        "dc_eximconfig_configtype='local'",
        f"dc_other_hostnames='{MAIL_HOST}'",
        "dc_local_interfaces='127.0.0.1'",
        "dc_readhost=''", "dc_relay_domains=''", "dc_minimaldns='false'", "dc_relay_nets=''",
        "dc_smarthost=''", "CFILEMODE='644'", "dc_use_split_config='false'", "dc_hide_mailname=''",
        "dc_mailname_in_oh='true'", "dc_localdelivery='mail_spool'",
    ])
    return f"""\
for d in /var/spool/exim4 /var/log/exim4 /var/lib/exim4 /run/exim4; do
    mkdir -p $d && chown Debian-exim:Debian-exim $d && chmod 750 $d
done
echo {MAIL_HOST} > /etc/mailname
printf 'postmaster: root\\n' > /etc/aliases
printf '%s\\n' {shlex.quote(conf)} > /etc/exim4/update-exim4.conf.conf
update-exim4.conf || {{ echo "UPDATE-EXIM4.CONF FAILED"; exit 12; }}
grep -A9 '^mail_spool:' /var/lib/exim4/config.autogenerated | sed 's/^/CONF /'
exim4 -bd -q30m || {{ echo "EXIM START FAILED"; exit 12; }}
n=0
while [ $n -lt 300 ] && ! {sys.executable} -c 'import socket; socket.create_connection(("127.0.0.1", 25), 1)' 2>/dev/null; do
    sleep 0.2; n=$((n + 1))
done
"""


def searchable(*paths):
    """
    Shell lines letting every user of the guest walk to C{paths} (the
    Python and the repository that a delivery agent run as the recipient
    needs): C{o+x} on each directory above them, in the guest's overlay
    only (the host's directories stay as they are; the host's Python may
    live under a private C{/root}).
    """
    dirs = set()
    for path in paths:
        path = os.path.realpath(path)
        while path != "/":
            path = os.path.dirname(path)
            dirs.add(path)
    return "".join(f"chmod o+x {shlex.quote(d)}\n" for d in sorted(dirs) if d != "/")
