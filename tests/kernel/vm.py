"""
Boot the test guest under qemu and collect what it leaves behind.

The guest sees the host's whole root read-only (so the repository, the
virtual environment and the test's temporary files are at the same paths
inside), a writable run directory holding the scenario script and
receiving its results, and optionally more writable host directories.
With networking on, the guest reaches the host's loopback as C{10.0.2.2}
through qemu's user-mode network: connections arrive at the host from
127.0.0.1, on unprivileged source ports.
"""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGE2 = HERE / "stage2.sh"
QEMU = "qemu-system-x86_64"

#: The guest's view of the host's loopback under qemu user networking.
HOST_FROM_GUEST = "10.0.2.2"


def find_qemu():
    """
    @return: the path of C{qemu-system-x86_64}, or L{None}.
    """
    return shutil.which(QEMU)


def choose_accelerator():
    """
    Use KVM only where it can boot a stock kernel: a hardware-backed
    C{kvm_intel}/C{kvm_amd} with C{/dev/kvm} usable.  A paravirtual KVM
    (C{kvm_pvm}, as nested cloud machines have) cannot, so TCG it is.

    C{$HLFS_QEMU_ACCEL} overrides the choice.
    """
    forced = os.environ.get("HLFS_QEMU_ACCEL")
    if forced:
        return forced
    hardware = any(Path("/sys/module", m).exists() for m in ("kvm_intel", "kvm_amd"))
    if hardware and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    return "tcg"


@dataclass
class GuestResult:
    """
    What a guest run left.

    @ivar status: the scenario's exit status, or L{None} if the guest never
        recorded one (it crashed or timed out).
    @ivar console: the serial console's text.
    @ivar run_dir: the run directory, with the scenario's files.
    @ivar elapsed: seconds from starting qemu to its exit.
    @ivar timed_out: whether qemu had to be killed.
    """

    status: object
    console: str
    run_dir: Path
    elapsed: float
    timed_out: bool
    output: str = field(default="")

    def read(self, name):
        """
        @return: the text of a file the scenario wrote in the run directory.
        """
        return (self.run_dir / name).read_text()

    def describe(self):
        """
        @return: console and scenario output, for assertion messages.
        """
        return (
            f"status={self.status} timed_out={self.timed_out} elapsed={self.elapsed:.1f}s\n"
            f"--- scenario output ---\n{self.output}\n--- console ---\n{self.console[-6000:]}"
        )

    def uptime_marks(self):
        """
        @return: the guest uptimes, in seconds, at which stage 2 and the
            scenario started, as logged on the console (L{None} if absent).
        """
        marks = {}
        for line in self.console.splitlines():
            for key, prefix in (("stage2", "HLFS-GUEST: stage2 at "), ("scenario", "HLFS-GUEST: scenario start at ")):
                if line.startswith(prefix):
                    marks[key] = float(line[len(prefix):].rstrip("s"))
        return marks


class Guest:
    """
    A bootable guest: a kernel, an initramfs and a qemu.

    @ivar memory: guest memory in MiB.
    @ivar cpus: guest processors; more than one lets processes of
        different users really run at the same time.
    """

    memory = 1024
    cpus = 2

    def __init__(self, qemu, kernel, initramfs, accelerator=None):
        self.qemu = qemu
        self.kernel = kernel
        self.initramfs = Path(initramfs)
        self.accelerator = accelerator or choose_accelerator()

    def command(self, run_dir, console, shares=(), net=True):
        """
        @param run_dir: the writable run directory.
        @param console: the file receiving the serial console.
        @param shares: more host directories the guest may write, each
            mounted at its own path inside.
        @param net: whether to give the guest a network card.
        @return: the qemu argument list.
        """
        append = [
            "console=ttyS0",
            "panic=-1",
            "loglevel=4",
            "random.trust_cpu=on",
            f"hlfs.stage2={STAGE2}",
            f"hlfs.run={run_dir}",
        ]
        argv = [
            self.qemu,
            "-accel", self.accelerator,
            "-cpu", "max" if self.accelerator == "tcg" else "host",
            "-smp", str(self.cpus),
            "-m", str(self.memory),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.kernel.image),
            "-initrd", str(self.initramfs),
            "-serial", f"file:{console}",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={run_dir},mount_tag=run,security_model=none,multidevs=remap",
        ]
        for index, share in enumerate(shares):
            argv += ["-virtfs", f"local,path={share},mount_tag=rw{index},security_model=none,multidevs=remap"]
            append.append(f"hlfs.rw{index}={share}")
        if net:
            # IPv4 only: the guest talks to 10.0.2.2 (the host's loopback)
            # and nothing else; no IPv6 router or forwarding to offer it.
            argv += ["-netdev", "user,id=net0,ipv6=off", "-device", "virtio-net-pci,netdev=net0"]
            append.append("hlfs.net=1")
        return argv + ["-append", " ".join(append)]

    def boot(self, run_dir, scenario, shares=(), net=True):
        """
        Start the guest on a scenario without waiting for it.

        @param run_dir: an empty directory to share with the guest.
        @param scenario: the text of the C{sh} script to run in it.
        @return: a L{RunningGuest}.
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "scenario.sh").write_text(scenario)
        console = run_dir.parent / f"{run_dir.name}.console"
        argv = self.command(run_dir, console, shares, net)
        (run_dir.parent / f"{run_dir.name}.qemu-command").write_text(" ".join(argv) + "\n")
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return RunningGuest(process, run_dir, console)

    def run(self, run_dir, scenario, shares=(), net=True, timeout=300):
        """
        Boot the guest on a scenario and wait until it powers off.

        @return: a L{GuestResult}.
        """
        return self.boot(run_dir, scenario, shares, net).wait(timeout)


class RunningGuest:
    """
    A guest being run by a qemu process.
    """

    def __init__(self, process, run_dir, console):
        self.process = process
        self.run_dir = run_dir
        self.console = console
        self.started = time.monotonic()

    def wait_for_file(self, name, timeout):
        """
        Wait until the scenario creates C{name} in the run directory.

        @return: whether it did before C{timeout} seconds or the guest's end.
        """
        deadline = time.monotonic() + timeout
        path = self.run_dir / name
        while time.monotonic() < deadline:
            if path.exists():
                return True
            if self.process.poll() is not None:
                return path.exists()
            time.sleep(0.05)
        return False

    def wait(self, timeout):
        """
        Wait for the guest to power off, killing it after C{timeout} seconds.

        @return: a L{GuestResult}.
        """
        timed_out = False
        try:
            qemu_output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(self.process.pid, signal.SIGKILL)
            qemu_output, _ = self.process.communicate()
        elapsed = time.monotonic() - self.started
        console = self.console.read_text(errors="replace") if self.console.exists() else ""
        if qemu_output:
            console += "\n--- qemu ---\n" + qemu_output.decode(errors="replace")
        status_file = self.run_dir / "scenario.status"
        status = int(status_file.read_text()) if status_file.exists() else None
        output_file = self.run_dir / "scenario.out"
        output = output_file.read_text(errors="replace") if output_file.exists() else ""
        return GuestResult(status, console, self.run_dir, elapsed, timed_out, output)

    def kill(self):
        """
        Stop the guest now.
        """
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate()
