#!/bin/sh
# Second stage of the test guest, PID 1 after switch_root into an overlay
# of the host's root (read-only, over 9p) and a tmpfs.
#
# Kernel command line words read here:
#   hlfs.run=DIR      the run directory: a writable 9p share (tag "run")
#                     mounted at DIR, holding scenario.sh; the results go
#                     back into it
#   hlfs.rwN=DIR      more writable 9p shares (tag "rwN") mounted at DIR
#   hlfs.net=1        bring up eth0 (qemu user networking: 10.0.2.15/24,
#                     the host's loopback is 10.0.2.2)
# The scenario's output goes to DIR/scenario.out, its exit status to
# DIR/scenario.status; then the guest powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

say() { echo "HLFS-GUEST: $*"; }
fail() {
    echo "HLFS-GUEST-FAIL: $*"
    sync
    busybox poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
say "stage2 at $(cut -d' ' -f1 /proc/uptime)s"

# The guest must never look a name up through qemu's DNS forwarder: that
# would leave the host for the outside world.
: >/etc/resolv.conf
hostname hlfs-guest
ip link set lo up || fail "lo"

run=
net=
for word in $(cat /proc/cmdline); do
    case "$word" in
        hlfs.run=*) run=${word#hlfs.run=} ;;
        hlfs.net=1) net=1 ;;
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

if [ -n "$net" ]; then
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || fail "eth0"
fi

cd "$run"
say "scenario start at $(cut -d' ' -f1 /proc/uptime)s"
sh "$run/scenario.sh" >"$run/scenario.out" 2>&1
status=$?
echo "$status" >"$run/scenario.status"
say "scenario exit $status at $(cut -d' ' -f1 /proc/uptime)s"
cd /
sync
busybox poweroff -f
