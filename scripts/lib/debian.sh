# shellcheck shell=bash
# debian.sh - Debian package helpers the install scripts share (sourced, not run):
# scripts/ceph-lab/install-deps.sh, scripts/kernel-lab/install.sh, scripts/compat-lab/.
#
# The sourcing script defines deb_log MSG and deb_die MSG (with its own prefix) and the
# array SUDO (empty when root) before calling apt_update_once.

# pkg_version PKG -> its version if fully installed ("ii"), else nothing
pkg_version() {
    local out
    out=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 0
    case "$out" in
        'ii |'*) printf '%s' "${out#*|}" ;;
    esac
}

# missing_pkgs PKG... -> the packages that are not fully installed, one a line
missing_pkgs() {
    local line pkg st
    local -A ok=()
    while IFS='|' read -r pkg st; do
        [ "$st" = "ii " ] && ok[$pkg]=1
    done < <(dpkg-query -W -f='${Package}|${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)
    for line in "$@"; do
        [ -n "${ok[$line]:-}" ] || printf '%s\n' "$line"
    done
}

# apt_update_once: `apt-get update` of the machine's own sources, at most once a run
APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    deb_log "apt-get update"
    "${SUDO[@]}" apt-get update -q -o Dpkg::Use-Pty=0 >&2 || deb_die "apt-get update failed"
    APT_UPDATED=1
}

# mirror_from_sources REGEX DEFAULT -> the first deb URI of the machine's sources that
# matches REGEX (one-line or deb822 format), else DEFAULT. Reads /etc/apt, never writes it.
mirror_from_sources() {
    local re=$1 f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /^(https?|ftp):\/\//) print $i }' "$f" \
              | grep -E "$re" | head -n1 || true)
        [ -n "$uri" ] && { printf '%s' "${uri%/}"; return 0; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk 'tolower($1)=="uris:" { for (i=2;i<=NF;i++) print $i }' "$f" \
              | grep -E "$re" | head -n1 || true)
        [ -n "$uri" ] && { printf '%s' "${uri%/}"; return 0; }
    done
    printf '%s' "$2"
}

# debian_mirror -> the machine's Debian mirror (deb.debian.org when its sources name none)
debian_mirror() {
    mirror_from_sources '^(https?|ftp)://.*/debian/?$' http://deb.debian.org/debian
}
