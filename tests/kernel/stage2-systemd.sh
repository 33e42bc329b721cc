#!/bin/sh
# Second stage of a guest booting systemd: PID 1 after switch_root (see
# init.sh), it mounts the run directory (hlfs.run=DIR, a writable 9p
# share) and the homes (hlfs.rwN=DIR), runs DIR/setup.sh to install the
# units to test, then becomes systemd, which starts hlfs-test.target.
# The units write DIR/scenario.out and DIR/scenario.status and power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

fail() {
    echo "HLFS-GUEST-FAIL: $*"
    busybox poweroff -f
}

mount -t proc proc /proc
echo "HLFS-GUEST: stage2 at $(cut -d' ' -f1 /proc/uptime)s"
# Nothing may leave through qemu's DNS forwarder.
: >/etc/resolv.conf
run=
for word in $(cat /proc/cmdline); do
    case "$word" in
        hlfs.run=*) run=${word#hlfs.run=} ;;
        hlfs.rw[0-9]*=*)
            tag=${word%%=*}
            tag=${tag#hlfs.}
            dir=${word#*=}
            mkdir -p "$dir"
            mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none "$tag" "$dir" ||
                fail "mount of share $tag on $dir"
            ;;
    esac
done
[ -n "$run" ] || fail "no hlfs.run= on the kernel command line"
mkdir -p "$run"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none run "$run" ||
    fail "mount of the run directory"
sh "$run/setup.sh" >"$run/setup.out" 2>&1 || fail "setup.sh: $(cat "$run/setup.out")"
echo "HLFS-GUEST: systemd at $(cut -d' ' -f1 /proc/uptime)s"
exec /lib/systemd/systemd --system --unit=hlfs-test.target --log-target=console
