"""
Scenario 7: the hardened unit under a real systemd.  The guest boots
systemd as PID 1 (on the host's root, an overlay on top), with
C{etc/hlfs.service} exactly as shipped but for the path of C{twistd} and
the test's users on its command line.  systemd starts rpcbind and hlfs
with the unit's sandbox; a unit without any sandbox, outside the
daemon's, checks that the mount reached the host's namespace, that each
caller gets its own link through it, that the daemon runs with exactly
the unit's capabilities, no new privileges and a system call filter,
and that C{systemctl stop} unmounts, unregisters and leaves the fixed
link.
"""

import shlex
from pathlib import Path

import pytest

import guestscript as gs
import vm
from hlfsserver import venv_bin
from world import HLFS_GID, SUBDIR, World

HERE = Path(__file__).resolve().parent
UNIT = HERE.parent.parent / "etc" / "hlfs.service"
STAGE2_SYSTEMD = HERE / "stage2-systemd.sh"

#: Seconds the checking unit waits for the daemon's mount.
MOUNT_WAIT = 300

#: The unit's CapabilityBoundingSet: CAP_SETGID 6, CAP_SETUID 7,
#: CAP_NET_BIND_SERVICE 10, CAP_SYS_ADMIN 21.
BOUNDING_SET = (1 << 6) | (1 << 7) | (1 << 10) | (1 << 21)


class SystemdGuest(vm.Guest):
    """
    A guest whose second stage becomes systemd.
    """

    def command(self, run_dir, console, shares=(), net=True):
        argv = vm.Guest.command(self, run_dir, console, shares, net)
        argv[-1] = argv[-1].replace(f"hlfs.stage2={vm.STAGE2}", f"hlfs.stage2={STAGE2_SYSTEMD}")
        return argv


def daemon_unit(world):
    text = UNIT.read_text()
    command = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert command.startswith("ExecStart=/usr/local/bin/twistd ")
    ours = command.replace("/usr/local/bin/twistd", venv_bin("twistd"), 1) + (
        f" --password-file {world.password_file} --alt-dir {world.alt_dir}"
        f" --subdir {SUBDIR} --group {HLFS_GID}"
    )
    return text.replace(command, ours)


def units(world, run_dir):
    check = run_dir / "check.sh"
    return {
        "hlfs.service": daemon_unit(world),
        "hlfs-check.service": f"""\
[Unit]
Description=check the hardened hlfs from outside its sandbox
After=hlfs.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'sh {check} >{run_dir}/scenario.out 2>&1; echo $? >{run_dir}/scenario.status; sync'
ExecStartPost=/bin/systemctl poweroff --force --force
""",
        "hlfs-test.target": """\
[Unit]
Description=the hardened hlfs and its check
Wants=hlfs.service hlfs-check.service
""",
    }


def setup_script(world, run_dir):
    lines = ["set -e", "rm -rf /var/spool/mail && ln -s /mail/home /var/spool/mail"]
    for name, text in units(world, run_dir).items():
        lines.append(f"cat > /etc/systemd/system/{name} <<'UNIT'\n{text}UNIT")
    # Timers would start host jobs (apt, backups) in the guest, and
    # Debian's tmpfiles empty /tmp at boot, where the probe program is.
    lines.append("ln -sf /dev/null /etc/systemd/system/timers.target")
    lines.append(": > /etc/tmpfiles.d/tmp.conf")
    return "\n".join(lines) + "\n"


def check_script(world, probe):
    lines = [gs.preamble(probe)]
    lines.append(f"""
waited=0
while ! grep -q ' /mail nfs ' /proc/mounts; do
    [ "$(systemctl show -P ActiveState hlfs)" != failed ] || break
    [ $waited -lt {MOUNT_WAIT * 5} ] || break
    sleep 0.2
    waited=$((waited + 1))
done
""")
    lines.append("R mounted-at $(up)")
    lines.append("R active $(systemctl show -P ActiveState hlfs)")
    lines.append("R mount-options $(grep ' /mail nfs ' /proc/mounts | cut -d' ' -f4)")
    lines.append("pid=$(systemctl show -P MainPID hlfs)")
    for field in ("CapBnd", "CapEff", "NoNewPrivs", "Seccomp"):
        lines.append(f"R {field} $(awk '$1 == \"{field}:\" {{ print $2 }}' /proc/$pid/status)")
    for name in ("alice", "bob", "carol"):
        user = world.users[name]
        cred = f"{user.uid} {user.gid} {user.gid}"
        lines.append(f'R link.{name} "$(as {cred} readlink /mail/home 2>&1)"')
        lines.append(f'R owner.{name} "$(as {cred} cat /var/spool/mail/.owner 2>&1)"')
    lines.append("R registered $(rpcinfo -p 127.0.0.1 2>&1 | grep -c ' 100003 ')")
    lines.append("systemctl stop hlfs")
    lines.append("R result $(systemctl show -P Result hlfs) $(systemctl show -P ExecMainStatus hlfs)")
    lines.append("R unmounted $(grep -c ' /mail nfs ' /proc/mounts)")
    lines.append("R registered-after $(rpcinfo -p 127.0.0.1 2>&1 | grep -c ' 100003 ')")
    lines.append('R fixed "$(readlink /mail/home)"')
    lines.append("journalctl -b -u hlfs -u rpcbind --no-pager | tail -n 40")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def systemd_run(guest, probe, kernel_workdir, precompiled):
    world = World(kernel_workdir / "systemd").create()
    run_dir = kernel_workdir / "systemd-run"
    run_dir.mkdir()
    (run_dir / "setup.sh").write_text(setup_script(world, run_dir))
    (run_dir / "check.sh").write_text(check_script(world, probe))
    booted = SystemdGuest(guest.qemu, guest.kernel, guest.initramfs, guest.accelerator)
    result = booted.run(run_dir, "# see setup.sh and check.sh\n", shares=[world.base], net=False,
                        timeout=900)
    assert result.status == 0, result.describe()
    return world, result


def test_hardened_unit_starts_mounts_and_serves(systemd_run, measure):
    world, result = systemd_run
    got = gs.results(result.output)
    want = {
        "active": "active",
        "CapBnd": f"{BOUNDING_SET:016x}",
        "CapEff": f"{BOUNDING_SET:016x}",
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "result": "success 0",
        "unmounted": "0",
        "registered-after": "0",
        "fixed": str(world.alt_dir),
    }
    for name in ("alice", "bob", "carol"):
        user = world.users[name]
        want[f"link.{name}"] = world.link_value(user.uid)
        want[f"owner.{name}"] = world.owner(user.uid)
    assert {k: got.get(k) for k in want} == want, result.describe()
    assert "lookupcache=none" in got.get("mount-options", "").split(","), result.describe()
    assert int(got.get("registered", "0")) >= 2, result.describe()
    measure(f"scenario 7 (hardened unit under systemd): mounted at {got['mounted-at']}s of uptime")


def test_units_are_the_shipped_ones(tmp_path):
    """
    The guest's unit differs from etc/hlfs.service only in its command.
    """
    world = World(tmp_path)
    shipped = UNIT.read_text().splitlines()
    ours = daemon_unit(world).splitlines()
    assert [a for a, b in zip(shipped, ours) if a != b] == [
        next(line for line in shipped if line.startswith("ExecStart="))
    ]
    assert len(shipped) == len(ours)
    assert shlex.split(ours[shipped.index(next(l for l in shipped if l.startswith("ExecStart=")))])[
        -8:
    ] == ["--password-file", str(world.password_file), "--alt-dir", str(world.alt_dir),
          "--subdir", SUBDIR, "--group", str(HLFS_GID)]
