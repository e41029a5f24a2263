#!/bin/bash
# guest-stage2.sh - second stage of the kernel lab's guest, PID 1, run by the HOST's bash
# from the shared root (run copies this file into the control directory).
#
# Sets up what a dom0 has and the initramfs does not: devpts, network to the host's test
# cluster (10.0.2.15/24 via 10.0.2.2, 127.0.0.1:<Ceph ports> rewritten to 10.0.2.2 by
# nftables, everything else dropped), udev; then runs the command from the control
# directory with its own time limit and writes its stdout, stderr and exit status there.
#
# Control directory (/run/kernel-lab/ctl, the host's run dir over 9p):
#   argv, env     NUL-separated command and KEY=VALUE pairs (written by run)
#   cwd, limit    working directory, time limit in seconds
#   ready         written here when the guest is ready (guest uptime in seconds)
#   stdout, stderr, rc     the command's output and exit status (rc written last)
#   timedout      written when the command hit its limit (rc is then 124)
#   lab-error     written when stage 2 itself failed (no rc then)
set -u
CTL=/run/kernel-lab/ctl
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
exec </dev/null >/dev/console 2>&1

uptime_s() { local u _; read -r u _ </proc/uptime; printf '%s' "$u"; }
say() { printf 'klab-stage2 [%s]: %s\n' "$(uptime_s)" "$*"; }
power_off() {
    sync
    echo o >/proc/sysrq-trigger
    # wait for the power-off without running anything more from the shared root
    read -r -t 30 _ <>/dev/console
}
die() {
    say "FATAL: $*"
    printf '%s\n' "$*" >"$CTL/lab-error"
    echo KLAB-FAIL
    power_off
}
# step LIMIT CMD...: run CMD with a time limit; a failure or a hang is fatal
step() {
    local lim=$1 rc=0
    shift
    timeout -k 2 "$lim" "$@" || rc=$?
    [ "$rc" = 0 ] || die "'$*' failed (rc=$rc$([ "$rc" = 124 ] && printf ', timed out after %s s' "$lim"))"
}

mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || die "mount devpts"
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm || die "mount /dev/shm"
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
[ -e /dev/ptmx ] || ln -sfn pts/ptmx /dev/ptmx
mkdir -p /run/lock /var/log/ceph /run/ceph
hostname kernel-lab 2>/dev/null || true

say "stage 2 started"
# --- network: only the host's Ceph ports, through QEMU's user network --------------------
step 30 modprobe virtio_net
for _ in $(seq 1 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
[ -e /sys/class/net/eth0 ] || die "no eth0 (virtio-net) in the guest"
sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 || true
step 10 ip link set lo up
step 10 ip addr add 10.0.2.15/24 dev eth0
step 10 ip link set eth0 up
step 10 ip route add default via 10.0.2.2
step 10 sysctl -qw net.ipv4.conf.all.route_localnet=1
CEPH_PORTS="3300-3400, 6789-6799, 6800-7300"
step 30 nft -f - <<EOF
table ip kernel_lab {
    chain nat_out {
        type nat hook output priority -100; policy accept;
        ip daddr 127.0.0.1 tcp dport { $CEPH_PORTS } dnat to 10.0.2.2
    }
    chain nat_post {
        type nat hook postrouting priority 100; policy accept;
        oifname "eth0" ip saddr 127.0.0.0/8 snat to 10.0.2.15
    }
    chain filter_out {
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        ip daddr 10.0.2.2 tcp dport { $CEPH_PORTS } accept
    }
}
table ip6 kernel_lab {
    chain filter_out {
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
    }
}
EOF

say "network ready"
# --- udev: rbd device map waits for udev's event unless -o noudev -------------------------
# Coldplug of the subsystems the datapaths touch (block, misc, net) takes 1 s under TCG;
# KERNEL_LAB_UDEV_TRIGGER=all on the host replays every device (246 events, about 8 s,
# and udev then loads floppy, kvm, ata and the like for nothing). Devices that appear
# later (rbd, nbd, ...) get their events either way.
step 30 /lib/systemd/systemd-udevd --daemon
if grep -qw klab.udev=all /proc/cmdline; then
    step 60 udevadm trigger --action=add
else
    step 60 udevadm trigger --action=add --subsystem-match=block --subsystem-match=misc --subsystem-match=net
fi
say "udev events triggered"
step 60 udevadm settle --timeout=55

uptime_s >"$CTL/ready"
say "KLAB-READY"

# --- the command ---------------------------------------------------------------------------
ARGV=() ENVV=()
mapfile -d '' -t ARGV <"$CTL/argv" || die "cannot read $CTL/argv"
[ -f "$CTL/env" ] && mapfile -d '' -t ENVV <"$CTL/env"
CWD=$(cat "$CTL/cwd" 2>/dev/null || echo /)
LIMIT=$(cat "$CTL/limit" 2>/dev/null || echo 300)
[ "${#ARGV[@]}" -gt 0 ] || die "empty command"
cd "$CWD" 2>/dev/null || { say "cwd $CWD does not exist in the guest: using /"; cd /; }

say "running: ${ARGV[*]} (limit ${LIMIT} s)"
# setsid: the command leads its own process group, so a time-out stops all of it
setsid env -i PATH="$PATH" HOME=/root LANG=C.UTF-8 TERM=dumb KERNEL_LAB_GUEST=1 "${ENVV[@]}" \
    "${ARGV[@]}" </dev/null >"$CTL/stdout" 2>"$CTL/stderr" &
CMD_PID=$!
(
    sleep "$LIMIT"
    : >"$CTL/timedout"
    kill -TERM -- "-$CMD_PID" 2>/dev/null || kill -TERM "$CMD_PID" 2>/dev/null
    sleep 5
    kill -KILL -- "-$CMD_PID" 2>/dev/null || kill -KILL "$CMD_PID" 2>/dev/null
) &
WATCH_PID=$!
rc=0
wait "$CMD_PID" || rc=$?
kill "$WATCH_PID" 2>/dev/null
[ -e "$CTL/timedout" ] && rc=124
say "command exited with status $rc"
printf '%s\n' "$rc" >"$CTL/rc.tmp"
mv -f "$CTL/rc.tmp" "$CTL/rc"
power_off
