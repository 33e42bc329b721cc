#!/bin/sh
# First stage of the test guest, run by the kernel from the initramfs.
#
# Loads the modules, mounts the host's root over virtio-9p (read-only),
# puts a tmpfs overlay on top so the guest may write, and switch_roots
# into it to run the second stage named by hlfs.stage2= on the kernel
# command line (a file of the host, seen at the same path).
export PATH=/bin

fail() {
    echo "HLFS-GUEST-FAIL: $*"
    /bin/busybox poweroff -f
}

/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for m in $(cat /modules/order); do
    insmod "/modules/$m" || fail "insmod $m"
done

stage2=
for word in $(cat /proc/cmdline); do
    case "$word" in
        hlfs.stage2=*) stage2=${word#hlfs.stage2=} ;;
    esac
done
[ -n "$stage2" ] || fail "no hlfs.stage2= on the kernel command line"

# cache=loose: the host's root does not change under the guest, and
# caching it makes starting Python in the guest several times faster.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower ||
    fail "mount of the host root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "tmpfs"
mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
    fail "overlay"
[ -f "/newroot$stage2" ] || fail "stage 2 $stage2 not found on the host root"

umount /proc /sys /dev
exec switch_root /newroot /bin/sh "$stage2"
fail "switch_root"
