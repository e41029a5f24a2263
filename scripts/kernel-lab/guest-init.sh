#!/bin/sh
# guest-init.sh - /init of the kernel lab's initramfs (busybox sh, PID 1 in the guest).
#
# Kernel command line:
#   klab.mode=probe   load the initramfs modules, print KLAB-PROBE-OK, power off
#                     (the KVM probe boot)
#   klab.mode=run     mount the host's root (9p tag klabroot, exported read-only) as the
#                     lower layer of an overlay whose upper layer is RAM, fresh tmpfs on
#                     /run and /var/log, the module tree (tag klabmods) on
#                     /lib/modules/<klab.kver>, the control directory (tag klabctl) on
#                     /run/kernel-lab/ctl, each --share (tags listed in ctl/shares) at its
#                     own path, then switch_root to the host's bash running
#                     /run/kernel-lab/ctl/stage2.sh.
#   klab.kver=...     kernel release (the module tree's directory name)
#   klab.msize=...    9p msize
#   klab.rootcache=   9p cache mode of the root (loose by default; none = always ask the host)
#   klab.upper=...    size of the overlay's RAM layer (tmpfs size=)
# Any failure prints "klab-init: FATAL: ..." on the console and powers the guest off:
# the host sees no exit status and reports a lab failure with the console's tail.
PATH=/bin
export PATH
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

uptime_s() { read -r u _ </proc/uptime; echo "$u"; }
say() { echo "klab-init [$(uptime_s)]: $*"; }
die() {
    say "FATAL: $*"
    echo KLAB-FAIL
    sync
    poweroff -f
    sleep 30
}

MODE=run KVER="" MSIZE=512000 ROOTCACHE=loose UPPER=50%
read -r CMDLINE </proc/cmdline
for w in $CMDLINE; do
    case "$w" in
        klab.mode=*) MODE=${w#*=} ;;
        klab.kver=*) KVER=${w#*=} ;;
        klab.msize=*) MSIZE=${w#*=} ;;
        klab.rootcache=*) ROOTCACHE=${w#*=} ;;
        klab.upper=*) UPPER=${w#*=} ;;
    esac
done

while read -r m; do
    insmod "/lib/modules/$m" || die "insmod $m failed"
done </lib/modules/order
say "initramfs modules loaded"

if [ "$MODE" = probe ]; then
    echo KLAB-PROBE-OK
    poweroff -f
    sleep 30
fi
[ "$MODE" = run ] || die "unknown klab.mode=$MODE"
[ -n "$KVER" ] || die "klab.kver= missing from the kernel command line"

P9="trans=virtio,version=9p2000.L,msize=$MSIZE"
mount -t 9p -o "$P9,ro,cache=$ROOTCACHE" klabroot /lower || die "cannot mount the host's root (9p tag klabroot)"
mount -t tmpfs -o "mode=755,size=$UPPER" upper /upper || die "cannot mount the overlay's tmpfs"
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w,redirect_dir=off,index=off,metacopy=off \
    rootfs /newroot || die "cannot mount the overlay root"
R=/newroot
for d in run var/log; do
    [ -d "$R/$d" ] || mkdir -p "$R/$d"
    mount -t tmpfs -o mode=755,nosuid,nodev "tmp-${d##*/}" "$R/$d" || die "cannot mount tmpfs on /$d"
done
mkdir -p "$R/run/kernel-lab/ctl" "$R/lib/modules/$KVER"
mount -t 9p -o "$P9,cache=none" klabctl "$R/run/kernel-lab/ctl" || die "cannot mount the control directory (9p tag klabctl)"
mount -t 9p -o "$P9,ro,cache=loose" klabmods "$R/lib/modules/$KVER" || die "cannot mount the module tree (9p tag klabmods)"
if [ -f "$R/run/kernel-lab/ctl/shares" ]; then
    while read -r tag path; do
        [ -n "$tag" ] || continue
        mkdir -p "$R$path" || die "cannot create the mount point $path"
        mount -t 9p -o "$P9,cache=none" "$tag" "$R$path" || die "cannot mount the share $path (9p tag $tag)"
        say "share $path mounted"
    done <"$R/run/kernel-lab/ctl/shares"
fi
[ -x "$R/bin/bash" ] || die "/bin/bash missing in the host's root"
[ -f "$R/run/kernel-lab/ctl/stage2.sh" ] || die "stage2.sh missing in the control directory"
say "root ready, switching to the host's bash"
for d in dev proc sys; do
    mount --move "/$d" "$R/$d" || die "cannot move /$d into the new root"
done
exec switch_root "$R" /bin/bash /run/kernel-lab/ctl/stage2.sh
