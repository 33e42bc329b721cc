"""
Scenario 7: the Debian package under a real systemd, in one boot.

The Debian package is built and installed on the host (the
C{debian_package} fixture, C{apt-get install ./hlfs_*.deb}); the guest
boots on the host's root file system, so it has the package as installed:
its units, its Python code run by Debian's Python and Twisted, the
C{hlfs} group.  The guest boots systemd as PID 1 (C{stage2-systemd.sh});
the test's users are added to its password file, C{/var/mail} becomes the
link to C{/mail/home}, and Debian's Postfix is set up as its package
would be.  Then, from a unit without any sandbox, outside the daemons':

  1. The packaged C{hlfs.service}, unchanged, started by systemd with
     rpcbind: the mount reached the host's namespace with the lookup cache
     off, each caller gets its own link through it, the daemon runs with
     exactly the unit's capabilities, no new privileges and a system call
     filter; mail sent through Postfix (C{sendmail} and SMTP) lands in each
     recipient's home, and the mail of a user whose home is C{/} in the
     alternate spool; C{systemctl stop} unmounts, unregisters and leaves
     the fixed link.
  2. Two instances of the packaged C{hlfs@.service}, C{mail} (on
     C{/mail}) and C{tmp} (the paper's per-user C{/var/tmp}, on
     C{/hlfs-tmp}), from C{/etc/hlfs/mail.conf} and C{/etc/hlfs/tmp.conf}:
     each mounted, each serving its own link to the kernel client, each
     with its pid file, syslog tag and metrics label.  One holds the
     portmapper's mappings, the other serves without; rpcbind is
     restarted without its saved state, and the holder registers again,
     to its own port, within seconds; stopping the other leaves the
     holder's mappings as they are.
     Before it stops, the packaged C{hlfs-lostmail.service}, sandboxed as
     shipped, is started with C{systemctl start} while mail waits in the
     alternate spool: alice's and bob's, left there while their homes
     were unusable, goes out through Postfix's C{sendmail} (its setgid
     postdrop) and lands in each one's home; the mail of a system account
     (C{daemon}) and of carol (home C{/}), whose mailbox the alternate
     spool is, stays there.  A C{sendmail} in front of Postfix's records
     what it runs under: the unit's capabilities, a system call filter,
     and no C{NoNewPrivs}.
  3. C{apt-get purge hlfs}: no unit, mount or group left, the
     administrator's settings files kept, and the mail in the alternate
     spool never removed.
"""

import re
import shlex
from pathlib import Path

import pytest

import guestscript as gs
import mta
import vm
from world import SUBDIR, World

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STAGE2_SYSTEMD = HERE / "stage2-systemd.sh"

#: Seconds the checking unit waits for a daemon's mount (Python starts
#: slowly under emulation).
MOUNT_WAIT = 420

#: The unit's CapabilityBoundingSet: CAP_SETGID 6, CAP_SETUID 7,
#: CAP_NET_BIND_SERVICE 10, CAP_SYS_ADMIN 21.
BOUNDING_SET = (1 << 6) | (1 << 7) | (1 << 10) | (1 << 21)

#: hlfs-lostmail.service's CapabilityBoundingSet: CAP_CHOWN 0,
#: CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2, CAP_FOWNER 3, CAP_KILL 5,
#: CAP_SETGID 6, CAP_SETUID 7.
LOSTMAIL_BOUNDING_SET = 0b11101111

#: The alternate spool of the packaged daemon: its default.
ALT = "/var/alt_mail"

#: Users whose mail waits in the alternate spool for lostmail.
LOST = ("alice", "bob")

#: Where the packaged lostmail.conf puts its figures (node_exporter's).
TEXTFILE = "/var/lib/prometheus/node-exporter/hlfs_lostmail.prom"

#: What the sendmail in front of Postfix's writes: the sandbox it runs in.
SEEN = "/run/hlfs-lostmail-seen"

#: That sendmail.
SENDMAIL_SEEN = f"""\
#!/bin/sh
# What the MTA's sendmail runs under in hlfs-lostmail.service; then Postfix's.
awk '$1 ~ /^(CapBnd|CapEff|NoNewPrivs|Seccomp):$/ {{ printf "%s%s ", $1, $2 }}' \
    /proc/self/status > {SEEN}
exec /usr/sbin/sendmail "$@"
"""

#: The instances of hlfs@.service and their settings files.
INSTANCES = {
    "mail": {"mount": "/mail", "metrics": "9437"},
    "tmp": {"mount": "/hlfs-tmp", "subdir": "tmp", "alt-dir": "/var/tmp-alt", "metrics": "9438"},
}

SENDER = "sender@example.org"
RECIPIENTS = ("alice", "bob", "carol")


class SystemdGuest(vm.Guest):
    """
    A guest whose second stage becomes systemd.
    """

    def command(self, run_dir, console, shares=(), net=True):
        argv = vm.Guest.command(self, run_dir, console, shares, net)
        argv[-1] = argv[-1].replace(f"hlfs.stage2={vm.STAGE2}", f"hlfs.stage2={STAGE2_SYSTEMD}")
        return argv


def subject(name):
    return f"hlfs-packaged-{name}"


def setup_script(world, run_dir, tree):
    users = [world.users[name] for name in RECIPIENTS]
    lines = [
        "set -e",
        mta.install(tree),
        mta.accounts(users),
        mta.mail_link(),
    ]
    for name, settings in INSTANCES.items():
        text = "[hlfs]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
        lines.append(f"cat > /etc/hlfs/{name}.conf <<'CONF'\n{text}CONF")
    check = run_dir / "check.sh"
    units = {
        "hlfs-check.service": f"""\
[Unit]
Description=check the packaged hlfs from outside its sandbox
After=hlfs.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'sh {check} >{run_dir}/scenario.out 2>&1; echo $? >{run_dir}/scenario.status; sync'
ExecStartPost=/bin/systemctl poweroff --force --force
""",
        "hlfs-test.target": """\
[Unit]
Description=the packaged hlfs and its check
Wants=hlfs.service hlfs-check.service
""",
    }
    for name, text in units.items():
        lines.append(f"cat > /etc/systemd/system/{name} <<'UNIT'\n{text}UNIT")
    # Timers would start host jobs (apt, backups) in the guest, and
    # Debian's tmpfiles empty /tmp at boot, where the probe program is;
    # man-db's index need not be rebuilt when the package is purged.
    lines.append("ln -sf /dev/null /etc/systemd/system/timers.target")
    lines.append(": > /etc/tmpfiles.d/tmp.conf")
    lines.append("rm -f /var/lib/man-db/auto-update")
    # A policy-rc.d of the host's (one that refuses every action, as
    # package installations in containers use) would keep the package's
    # maintainer scripts from stopping the daemons: this guest runs systemd.
    lines.append("rm -f /usr/sbin/policy-rc.d")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def wait_mount(path):
    return f"""\
waited=0
while ! grep -q ' {path} nfs ' /proc/mounts; do
    [ $waited -lt {MOUNT_WAIT * 5} ] || break
    sleep 0.2
    waited=$((waited + 1))
done
R mounted-at.{path} $(up)
"""


def port_of(path):
    return (f"$(grep ' {path} nfs ' /proc/mounts | tr ',' '\\n' | sed -n 's/^port=//p' | head -1)")


def links(world, mount, prefix):
    lines = []
    for name in RECIPIENTS:
        user = world.users[name]
        cred = f"{user.uid} {user.gid} {user.gid}"
        lines.append(f'R {prefix}.{name} "$(as {cred} readlink {mount}/home 2>&1)"')
    return "\n".join(lines) + "\n"


def registered_ports():
    """
    Shell: the ports hlfs's programs (NFS, MOUNT, status) are registered
    to, one line, sorted and unique.
    """
    return ("$(rpcinfo -p 127.0.0.1 2>/dev/null | awk '$1 == 100003 || $1 == 100005 || "
            "$1 == 541083718 { print $4 }' | sort -u | tr '\\n' ' ')")


def metric(port, name):
    code = (
        "import sys, urllib.request\n"
        "text = urllib.request.urlopen(sys.argv[1], timeout=60).read().decode()\n"
        "print(' '.join(l for l in text.splitlines() if l.split('{')[0] == sys.argv[2]))\n"
    )
    return f"$(python3 -c {shlex.quote(code)} http://127.0.0.1:{port}/metrics {name} 2>&1)"


def lost_message(name):
    """
    A message as a delivery agent leaves it in a mailbox (mboxrd: its
    C{From } line quoted).
    """
    text = mta.message(SENDER, name, subject(f"lostmail-{name}")).replace("\nFrom ", "\n>From ")
    return f"From {SENDER} Sun Dec  6 10:00:00 2026\n{text}\n"


def lostmail_script(world):
    """
    Shell lines: alice's and bob's mail waiting in the alternate spool
    (written as each, as a delivery agent would have while their homes
    were unusable), a system account's delivered there by Postfix, then
    the packaged hlfs-lostmail.service started by systemd.
    """
    lines = [mta.sendmail(SENDER, "daemon", subject("system-daemon")),
             mta.wait_deliveries(2 * len(RECIPIENTS) + 1, key="deliveries-before-lostmail")]
    for name in LOST:
        user = world.users[name]
        lines.append(f"printf %s {shlex.quote(lost_message(name))} | "
                     f"as {user.uid} {user.gid} {user.gid} sh -c 'umask 077; cat > {ALT}/{name}'")
    lines += [
        f"mkdir -p {Path(TEXTFILE).parent}",
        f"printf %s {shlex.quote(SENDMAIL_SEEN)} > /usr/local/sbin/sendmail-seen",
        "chmod 755 /usr/local/sbin/sendmail-seen",
        "sed -i 's|^sendmail = .*|sendmail = /usr/local/sbin/sendmail-seen|' "
        "/etc/hlfs/lostmail.conf",
        "systemctl start hlfs-lostmail.service; R lostmail-start $?",
        "R lostmail-result $(systemctl show -P Result hlfs-lostmail) "
        "$(systemctl show -P ExecMainStatus hlfs-lostmail)",
        f"R lostmail-seen $(cat {SEEN} 2>&1)",
        mta.wait_deliveries(2 * len(RECIPIENTS) + 1 + len(LOST), key="deliveries-after-lostmail"),
    ]
    for name in LOST:
        lines.append(f"R lostmail-left.{name} $(stat -c %s {ALT}/{name} 2>&1)")
    lines.append(f'R lostmail-daemon "$(grep -c "^Subject: {subject("system-daemon")}" '
                 f'{ALT}/daemon 2>&1)"')
    lines.append(f'R lostmail-carol "$(grep -c "^Subject: hlfs-packaged-" {ALT}/carol 2>&1)"')
    lines.append("R lostmail-summary \"$(journalctl -b -u hlfs-lostmail --no-pager -o cat | "
                 "grep 'left in the alternate spool')\"")
    lines.append(f"R lostmail-figures \"$(grep -v '^#' {TEXTFILE} | sed 's/{{[^}}]*}}//' | "
                 "grep -E 'resident|left|resent|success ' | sort | tr '\\n' ' ')\"")
    lines.append("journalctl -b -u hlfs-lostmail --no-pager | sed 's/^/LOSTMAIL /'")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def check_script(world, probe):
    lines = [gs.preamble(probe)]
    # 1. The packaged hlfs.service.
    lines.append(wait_mount("/mail"))
    lines.append("R active $(systemctl show -P ActiveState hlfs)")
    lines.append("R mount-options $(grep ' /mail nfs ' /proc/mounts | cut -d' ' -f4)")
    lines.append("R unit-file $(systemctl show -P FragmentPath hlfs)")
    lines.append("pid=$(systemctl show -P MainPID hlfs)")
    lines.append('R exe "$(tr "\\0" " " < /proc/$pid/cmdline)"')
    for field in ("CapBnd", "CapEff", "NoNewPrivs", "Seccomp"):
        lines.append(f"R {field} $(awk '$1 == \"{field}:\" {{ print $2 }}' /proc/$pid/status)")
    lines.append(links(world, "/mail", "link"))
    for name in ("alice", "bob"):
        user = world.users[name]
        lines.append(f'R owner.{name} "$(as {user.uid} {user.gid} {user.gid} cat /var/mail/.owner 2>&1)"')
    lines.append("R pidfile $(cat /run/hlfs/hlfsd.pid 2>&1) $pid")
    lines.append("R registered $(rpcinfo -p 127.0.0.1 2>&1 | grep -c ' 100003 ')")
    # Postfix set up as its package would, then started.
    lines.append(mta.postfix_setup())
    lines.append(mta.postfix_start())
    for name in RECIPIENTS:
        lines.append(mta.sendmail(SENDER, name, subject(f"sendmail-{name}")))
        lines.append(mta.smtp(SENDER, f"{name}@{mta.MAIL_HOST}", subject(f"smtp-{name}"),
                              "/usr/bin/python3"))
    lines.append(mta.wait_deliveries(2 * len(RECIPIENTS)))
    lines.append(f'R carol-alt "$(grep -c "^Subject: hlfs-packaged-" {ALT}/carol 2>&1)"')
    lines.append(lostmail_script(world))
    lines.append("postfix stop >/dev/null 2>&1")
    lines.append("systemctl stop hlfs")
    lines.append("R result $(systemctl show -P Result hlfs) $(systemctl show -P ExecMainStatus hlfs)")
    lines.append("R unmounted $(grep -c ' /mail nfs ' /proc/mounts)")
    lines.append("R registered-after $(rpcinfo -p 127.0.0.1 2>&1 | grep -c ' 100003 ')")
    lines.append('R fixed "$(readlink /mail/home)"')
    lines.append("R pidfile-after $(ls /run/hlfs/hlfsd.pid 2>/dev/null | wc -l)")

    # 2. Two instances of hlfs@.service.
    lines.append("systemctl start --no-block hlfs@mail hlfs@tmp")
    for settings in INSTANCES.values():
        lines.append(wait_mount(settings["mount"]))
    lines.append(f"mail_port={port_of('/mail')}; tmp_port={port_of('/hlfs-tmp')}")
    lines.append("R instance-ports $mail_port $tmp_port")
    lines.append(links(world, "/mail", "mail-link"))
    lines.append(links(world, "/hlfs-tmp", "tmp-link"))
    for name in INSTANCES:
        lines.append(f"pid=$(systemctl show -P MainPID hlfs@{name})")
        lines.append(f"R pidfile.{name} $(cat /run/hlfs-{name}/hlfsd.pid 2>&1) $pid")
        lines.append(f"R logged.{name} $(journalctl -b -t hlfsd-{name} --no-pager | grep -c 'serving ')")
    # Each daemon's look at the portmapper comes every 5 seconds: let the
    # one that deferred look once more before the portmapper is asked.
    lines.append("sleep 6")
    lines.append(f"R ports-before {registered_ports()}")
    for name, settings in INSTANCES.items():
        port = settings["metrics"]
        lines.append(f'R metrics-registration.{name} "{metric(port, "hlfs_portmap_registration")}"')
        lines.append(f'R metrics-mounted.{name} "{metric(port, "hlfs_mounted")}"')
    lines.append("""\
systemctl stop rpcbind.service rpcbind.socket
rm -f /run/rpcbind/*.xdr
systemctl start rpcbind.service
restarted=$(up)
n=0
while [ -z "$(rpcinfo -p 127.0.0.1 2>/dev/null | awk '$1 == 100003')" ] && [ $n -lt 600 ]; do
    sleep 0.2; n=$((n + 1))
done
R registered-again-in $(awk -v now="$(up)" -v then="$restarted" 'BEGIN { print now - then }')
sleep 12
R ports-after-restart """ + registered_ports() + """
R registered-again $(journalctl -b -u 'hlfs@*' --no-pager | grep -c 'lost the registration')
""")
    lines.append(f"holder={registered_ports()}")
    lines.append('if [ "$holder" = "$mail_port " ]; then other=tmp; else other=mail; fi')
    lines.append("R other $other")
    lines.append("systemctl stop hlfs@$other")
    lines.append(f"R ports-after-other-stopped {registered_ports()}")
    lines.append("R other-result $(systemctl show -P Result hlfs@$other)")
    lines.append("systemctl stop 'hlfs@*'")
    lines.append(f"R ports-after-both {registered_ports()}")

    # 3. Purge.
    lines.append("""\
systemctl start --no-block hlfs@tmp
""" + wait_mount("/hlfs-tmp") + """\
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q hlfs > /tmp/purge.out 2>&1; R purge $?
sed 's/^/PURGE /' /tmp/purge.out
R units-left $(ls /lib/systemd/system/hlfs* /etc/systemd/system/*/hlfs* 2>/dev/null | wc -l)
R units-known $(systemctl list-unit-files 'hlfs*' --no-legend 2>/dev/null | grep -v -c -e hlfs-check -e hlfs-test)
R mounts-left $(grep -c ' nfs ' /proc/mounts)
R group-left $(getent group hlfs | wc -l)
R hlfs-left $(ls /usr/bin/hlfs /usr/sbin/hlfsd /etc/hlfs/lostmail.conf 2>/dev/null | wc -l)
R settings-kept $(ls /etc/hlfs/mail.conf /etc/hlfs/tmp.conf 2>/dev/null | wc -l)
R mail-kept "$(grep -c '^Subject: hlfs-packaged-' """ + ALT + """/carol 2>&1)"
R active-left $(systemctl list-units 'hlfs*' --no-legend --state=active 2>/dev/null | grep -v -c -e hlfs-check -e hlfs-test)
""")
    lines.append("journalctl -b -u hlfs -u 'hlfs@*' -u rpcbind --no-pager | tail -n 80")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"



@pytest.fixture(scope="module")
def systemd_run(guest, probe, kernel_workdir, debian_package, postfix_tree, measure):
    world = World(kernel_workdir / "systemd").create()
    run_dir = kernel_workdir / "systemd-run"
    run_dir.mkdir()
    (run_dir / "setup.sh").write_text(setup_script(world, run_dir, postfix_tree))
    (run_dir / "check.sh").write_text(check_script(world, probe))
    booted = SystemdGuest(guest.qemu, guest.kernel, guest.initramfs, guest.accelerator)
    result = booted.run(run_dir, "# see setup.sh and check.sh\n", shares=[world.base], net=False,
                        timeout=2400)
    assert result.status == 0, result.describe()
    got = gs.results(result.output)
    measure(f"scenario 7 (the package under systemd): hlfs.service mounted at "
            f"{got.get('mounted-at./mail')}s of uptime, boot and scenario {result.elapsed:.1f}s")
    return world, result, got


def samples(text):
    """
    C{{frozenset(labels): value}} of the exposition lines C{text} holds.
    """
    found = {}
    for match in re.finditer(r"\w+\{([^}]*)\} (\S+)", text):
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        found[labels] = float(match.group(2))
    return found


def expect(result, got, want):
    assert {k: got.get(k) for k in want} == want, result.describe()


def test_packaged_unit_starts_mounts_and_serves(systemd_run):
    world, result, got = systemd_run
    want = {
        "active": "active",
        "unit-file": "/lib/systemd/system/hlfs.service",
        "CapBnd": f"{BOUNDING_SET:016x}",
        "CapEff": f"{BOUNDING_SET:016x}",
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "result": "success 0",
        "unmounted": "0",
        "registered-after": "0",
        "fixed": ALT,
        "pidfile-after": "0",
        "link.carol": ALT,
    }
    for name in ("alice", "bob"):
        want[f"link.{name}"] = f"{world.users[name].home}/{SUBDIR}"
        want[f"owner.{name}"] = name
    expect(result, got, want)
    # Debian's Python runs the package's hlfs, found by systemd.
    assert got["exe"].split()[:3] == ["/usr/bin/python3", "/usr/bin/hlfs", "twistd"], got["exe"]
    pid, main = got["pidfile"].split()
    assert pid == main
    assert "lookupcache=none" in got["mount-options"].split(","), result.describe()
    assert int(got["registered"]) >= 2, result.describe()


def test_mail_through_postfix_lands_in_the_right_home(systemd_run):
    world, result, got = systemd_run
    for name in ("alice", "bob"):
        mailbox = Path(world.users[name].home) / SUBDIR / name
        text = mailbox.read_text()
        for way in ("sendmail", "smtp"):
            mine = f"Subject: {subject(f'{way}-{name}')}\n"
            assert text.count(mine) == 1, (name, way, text)
        others = [n for n in RECIPIENTS if n != name]
        assert not any(subject(f"{way}-{n}") in text for n in others for way in ("sendmail", "smtp"))
    # carol's home is /: her two messages wait in the alternate spool.
    assert got["carol-alt"] == "2", result.describe()
    assert got["deliveries"] == str(2 * len(RECIPIENTS)), result.describe()


def test_lostmail_unit_resends_through_postfix_into_each_home(systemd_run):
    """
    The packaged hlfs-lostmail.service, started by systemd in its
    sandbox: each waiting message went out through Postfix's sendmail and
    landed once in its owner's home, marked as resent, leaving the
    alternate spool's mailbox empty; the system account's and carol's
    mail stayed, counted in the summary and the figures.  The MTA's
    sendmail ran with the unit's capabilities and filter, and could
    still gain postdrop's group (no NoNewPrivs).
    """
    world, result, got = systemd_run
    expect(result, got, {
        "lostmail-start": "0",
        "lostmail-result": "success 0",
        "lostmail-left.alice": "0",
        "lostmail-left.bob": "0",
        "lostmail-daemon": "1",
        "lostmail-carol": "2",
        "lostmail-summary": "left in the alternate spool, their owners' mailbox by hlfs's "
                            "rules: 2 (system accounts, uid under uid-min 1000: 1; home /: 1)",
        "deliveries-after-lostmail": str(2 * len(RECIPIENTS) + 1 + len(LOST)),
    })
    seen = dict(field.split(":") for field in got["lostmail-seen"].split())
    assert seen == {"CapBnd": f"{LOSTMAIL_BOUNDING_SET:016x}",
                    "CapEff": f"{LOSTMAIL_BOUNDING_SET:016x}",
                    "NoNewPrivs": "0", "Seccomp": "2"}, got["lostmail-seen"]
    figures = dict(zip(*[iter(got["lostmail-figures"].split())] * 2))
    assert figures == {"hlfs_lostmail_last_run_success": "1.0",
                       "hlfs_lostmail_mailboxes_left": "0.0",
                       "hlfs_lostmail_mailboxes_resident": "2.0",
                       "hlfs_lostmail_messages_resent": "2.0"}, got["lostmail-figures"]
    for name in LOST:
        text = (Path(world.users[name].home) / SUBDIR / name).read_text()
        assert text.count(f"Subject: {subject(f'lostmail-{name}')}\n") == 1, (name, text)
        assert text.count(f"X-Hlfs-Redelivered: from alternate spool {ALT}/{name} to {name} "
                          "by hlfs lostmail") == 1, text
        for other in RECIPIENTS:
            if other != name:
                assert subject(f"lostmail-{other}") not in text


def test_two_instances_each_serve_their_own_link(systemd_run):
    world, result, got = systemd_run
    mail_port, tmp_port = got["instance-ports"].split()
    assert mail_port != tmp_port
    for name in RECIPIENTS:
        user = world.users[name]
        if user.usable:
            assert got[f"mail-link.{name}"] == f"{user.home}/{SUBDIR}", result.describe()
            assert got[f"tmp-link.{name}"] == f"{user.home}/tmp", result.describe()
        else:
            assert got[f"mail-link.{name}"] == ALT
            assert got[f"tmp-link.{name}"] == "/var/tmp-alt"
    for name in INSTANCES:
        pid, main = got[f"pidfile.{name}"].split()
        assert pid == main, result.describe()
        assert int(got[f"logged.{name}"]) >= 1, result.describe()
    # One holds the mappings, to its own port; the other is deferred, and
    # says so in its metrics, labelled with its name.
    [holder] = got["ports-before"].split()
    assert holder in (mail_port, tmp_port)
    holding = "mail" if holder == mail_port else "tmp"
    other = "tmp" if holding == "mail" else "mail"
    for name, state in ((holding, "registered"), (other, "deferred")):
        assert samples(got[f"metrics-registration.{name}"]) == {
            frozenset({("state", s), ("name", name)}): float(s == state)
            for s in ("registered", "deferred", "unregistered")
        }, got[f"metrics-registration.{name}"]
        assert samples(got[f"metrics-mounted.{name}"]) == {frozenset({("name", name)}): 1.0}


def test_rpcbind_restarted_the_holder_registers_again(systemd_run):
    world, result, got = systemd_run
    holder = got["ports-before"].strip()
    # Restarted without its saved state: the holder found its mappings
    # gone and made them again, to its own port, within seconds.
    assert got["registered-again"] == "1", result.describe()
    assert float(got["registered-again-in"]) < 30, result.describe()
    assert got["ports-after-restart"].strip() == holder, result.describe()
    # Stopping the other instance leaves the holder's mappings.
    assert got["ports-after-other-stopped"].strip() == holder, result.describe()
    assert got["other-result"] == "success"
    assert got["ports-after-both"].strip() == "", result.describe()


def test_purge_leaves_no_unit_mount_or_group(systemd_run):
    world, result, got = systemd_run
    expect(result, got, {
        "purge": "0",
        "units-left": "0",
        "units-known": "0",
        "mounts-left": "0",
        "group-left": "0",
        "hlfs-left": "0",
        "active-left": "0",
        "settings-kept": "2",
        "mail-kept": "2",
    })


def test_the_guests_unit_is_the_shipped_one(debian_package):
    """
    The package installs etc/hlfs.service, etc/hlfs@.service and
    etc/hlfs-lostmail.service as they are: the guest ran them unchanged.
    """
    for unit in ("hlfs.service", "hlfs@.service", "hlfs-lostmail.service"):
        assert Path("/lib/systemd/system", unit).read_bytes() == (REPO / "etc" / unit).read_bytes()
