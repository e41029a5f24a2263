# shellcheck shell=bash
# lib.sh - helpers shared by install.sh and run (sourced, not run).
#
# Cache layout (KERNEL_LAB_CACHE, default /var/cache/cephrbd/kernel-lab):
#   kernel/<kver>/              the extracted linux-image-<kver>-unsigned package:
#                               boot/vmlinuz-<kver>, lib/modules/<kver>/ (depmod done),
#                               boot/vmlinux-<kver> (uncompressed, booted through PVH),
#                               .complete (package name and version, written last)
#   current                     symlink to kernel/<kver>: the kernel the lab boots
#   initramfs/<hash>.cpio.gz    busybox initramfs, keyed by everything that goes into it
#   variants/<kver>/<name>/     hard-linked module trees with some modules left out
#                               (run --no-module), depmod done on the smaller tree
#   kvm-probe                   "<boot id> <kver> <qemu version> kvm|tcg": the result of
#                               the KVM probe boot, valid until the host reboots

KLAB_CACHE=${KERNEL_LAB_CACHE:-/var/cache/cephrbd/kernel-lab}
KLAB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Modules the initramfs loads itself, before the root filesystem is there.
KLAB_INITRD_MODULES=(virtio_pci 9pnet_virtio 9p overlay)
# Modules the lab needs from the extracted package (checked at install time).
# shellcheck disable=SC2034 # used by install.sh
KLAB_REQUIRED_MODULES=(rbd nbd libceph virtio_pci virtio_net 9p 9pnet_virtio overlay
                       nf_tables nft_chain_nat nf_nat)
# Host packages the guest uses from the shared root, or the initramfs is built from.
# shellcheck disable=SC2034 # used by install.sh
KLAB_HOST_PKGS=(busybox-static kmod nftables udev iproute2 procps coreutils util-linux cpio gzip xz-utils)

klab_log() { [ "${KLAB_QUIET:-0}" = 1 ] || printf '%s: %s\n' "${KLAB_PROG:-kernel-lab}" "$*" >&2; }
klab_die() { printf '%s: ERROR: %s\n' "${KLAB_PROG:-kernel-lab}" "$*" >&2; exit "${KLAB_DIE_RC:-1}"; }

klab_now_ms() { echo $(($(date +%s%N) / 1000000)); }

# klab_kernel_dir -> absolute directory of the kernel the lab boots (empty if none)
klab_kernel_dir() {
    local d
    d=$(readlink -f -- "$KLAB_CACHE/current" 2>/dev/null) || return 0
    [ -f "$d/.complete" ] && printf '%s' "$d"
    return 0
}

# klab_kver DIR -> kernel release of an extracted kernel dir (its name)
klab_kver() { printf '%s' "${1##*/}"; }

# klab_module_path KDIR KVER NAME -> path of NAME.ko (modules.dep is the truth: names
# with - and _ are the same module)
klab_module_path() {
    local kdir=$1 kver=$2 name=$3 rel
    rel=$(awk -F: -v n="${name//-/_}" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?$/, "", f);
          gsub(/-/, "_", f); if (f == n) { print $1; exit } }' "$kdir/lib/modules/$kver/modules.dep")
    [ -n "$rel" ] && printf '%s' "$kdir/lib/modules/$kver/$rel"
}

# klab_qemu_version -> "10.0.2" style version of qemu-system-x86_64 (empty if absent)
klab_qemu_version() {
    local v
    v=$(qemu-system-x86_64 --version 2>/dev/null | head -n1) || return 0
    v=${v#*version }
    printf '%s' "${v%% *}"
}

# klab_initramfs KDIR -> path of the initramfs for KDIR, built if missing or stale.
# Its content: busybox (static, from the host's busybox-static), guest-init.sh as /init,
# and the modules KLAB_INITRD_MODULES need, with an ordered insmod list.
klab_initramfs() {
    local kdir=$1 kver bb key out tmp line m lockfd
    kver=$(klab_kver "$kdir")
    bb=$(command -v busybox 2>/dev/null || true)
    [ -n "$bb" ] || klab_die "busybox is missing (package busybox-static): run scripts/kernel-lab/install.sh"
    ldd "$bb" >/dev/null 2>&1 && klab_die "$bb is not static: install busybox-static (scripts/kernel-lab/install.sh)"
    key=$({ printf '%s\n' "$kver" "${KLAB_INITRD_MODULES[*]}"; cat "$KLAB_HERE/guest-init.sh";
            stat -c '%s %Y' "$bb"; } | sha256sum | cut -c1-16)
    out=$KLAB_CACHE/initramfs/$kver-$key.cpio.gz
    if [ -s "$out" ]; then printf '%s' "$out"; return 0; fi
    mkdir -p "$KLAB_CACHE/initramfs"
    # callers run this in $(...): the lock goes with the subshell
    exec {lockfd}>>"$KLAB_CACHE/.build.lock"
    flock -w 300 "$lockfd" || klab_die "timed out waiting for $KLAB_CACHE/.build.lock"
    if [ -s "$out" ]; then printf '%s' "$out"; return 0; fi
    klab_log "building the initramfs for $kver"
    tmp=$(mktemp -d "$KLAB_CACHE/initramfs/.build.XXXXXX")
    mkdir -p "$tmp"/{bin,dev,proc,sys,lib/modules,newroot,lower,upper,mnt}
    cp "$bb" "$tmp/bin/busybox"
    ln -s busybox "$tmp/bin/sh"
    cp "$KLAB_HERE/guest-init.sh" "$tmp/init"
    chmod 755 "$tmp/init"
    # modprobe --show-depends prints "insmod /path/x.ko [opts]" in load order (deps first)
    : >"$tmp/lib/modules/order"
    while read -r line; do
        case "$line" in
            insmod\ *) ;;
            builtin\ *) continue ;;
            *) klab_die "unexpected modprobe output: $line" ;;
        esac
        m=${line#insmod }
        m=${m%% *}
        grep -qxF -- "${m##*/}" "$tmp/lib/modules/order" && continue
        cp -- "$m" "$tmp/lib/modules/"
        printf '%s\n' "${m##*/}" >>"$tmp/lib/modules/order"
    done < <(for m in "${KLAB_INITRD_MODULES[@]}"; do
                 modprobe -d "$kdir" -S "$kver" --show-depends "$m" ||
                     klab_die "modprobe --show-depends $m failed for $kdir"
             done)
    (cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$tmp.cpio.gz"
    mv -f "$tmp.cpio.gz" "$out"
    rm -rf -- "$tmp"
    # drop initramfs images of older inputs
    find "$KLAB_CACHE/initramfs" -maxdepth 1 -name '*.cpio.gz' ! -path "$out" -delete 2>/dev/null || true
    printf '%s' "$out"
}

# klab_modules_tree KDIR NAME... -> a lib/modules/<kver> directory that lacks NAME....
# Without names, the package's own tree. Otherwise a cached hard-linked copy without
# those modules, with depmod run on it, so modprobe in the guest answers exactly as on a
# host whose kernel does not have them.
klab_modules_tree() {
    local kdir=$1 kver name n p vdir tmp lockfd
    shift
    kver=$(klab_kver "$kdir")
    if [ "$#" -eq 0 ]; then printf '%s' "$kdir/lib/modules/$kver"; return 0; fi
    name=$(printf '%s\n' "$@" | LC_ALL=C sort -u | tr '\n' '+')
    name="no-${name%+}"
    vdir=$KLAB_CACHE/variants/$kver/$name
    if [ -f "$vdir/.complete" ]; then printf '%s' "$vdir/lib/modules/$kver"; return 0; fi
    mkdir -p "$KLAB_CACHE/variants/$kver"
    exec {lockfd}>>"$KLAB_CACHE/.build.lock"
    flock -w 300 "$lockfd" || klab_die "timed out waiting for $KLAB_CACHE/.build.lock"
    if [ -f "$vdir/.complete" ]; then printf '%s' "$vdir/lib/modules/$kver"; return 0; fi
    klab_log "preparing a module tree without: $*"
    tmp=$(mktemp -d "$KLAB_CACHE/variants/$kver/.build.XXXXXX")
    mkdir -p "$tmp/lib/modules"
    cp -al -- "$kdir/lib/modules/$kver" "$tmp/lib/modules/$kver"
    for n in "$@"; do
        p=$(klab_module_path "$kdir" "$kver" "$n")
        [ -n "$p" ] || klab_die "--no-module $n: no such module in $kver"
        rm -f -- "$tmp/lib/modules/$kver/${p#"$kdir/lib/modules/$kver/"}"
    done
    # depmod rewrites the index files: they must not be hard links into the main tree
    rm -f -- "$tmp/lib/modules/$kver"/modules.*
    cp -- "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$tmp/lib/modules/$kver/" 2>/dev/null || true
    depmod -b "$tmp" "$kver" || klab_die "depmod failed for the variant $name"
    printf '%s\n' "$*" >"$tmp/.complete"
    rm -rf -- "$vdir"
    mv -- "$tmp" "$vdir"
    printf '%s' "$vdir/lib/modules/$kver"
}
