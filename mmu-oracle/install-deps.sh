#!/bin/sh
# Installs what the MMU oracle needs: QEMU system emulators for x86_64, AArch64, RISC-V and
# LoongArch64 (QEMU >= 8 is required for LoongArch, so QEMU comes from the distribution's
# backports suite), plus the cross assemblers/linkers that build the guests.
#
# Run as root. Idempotent: runs `apt-get update` once and installs only what is missing.
# The backports apt source is derived from the machine's existing Debian source (same URIs
# and Signed-By), so no mirror is hard-coded here.
set -eu

. /etc/os-release
codename="${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"
bpo="${codename}-backports"

# Whether some configured apt source already provides $bpo.
have_bpo_source() {
    grep -rqsE "^[^#]*(Suites:.*[[:space:]]|[[:space:]])${bpo}([[:space:]]|\$)" \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

add_bpo_source() {
    deb822=/etc/apt/sources.list.d/debian.sources
    out=/etc/apt/sources.list.d/mmu-oracle-backports.sources
    if [ -f "$deb822" ]; then
        # Take the first stanza whose Suites list the plain codename (the main archive).
        awk -v suite="$codename" -v bpo="$bpo" '
            function flush() {
                if (is_main && uris != "" && !done) {
                    print "Types: deb"
                    print "URIs: " uris
                    print "Suites: " bpo
                    print "Components: main"
                    if (signed != "") print "Signed-By: " signed
                    done = 1
                }
                is_main = 0; uris = ""; signed = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^URIs:/ { uris = $0; sub(/^URIs:[[:space:]]*/, "", uris) }
            /^Signed-By:/ { signed = $0; sub(/^Signed-By:[[:space:]]*/, "", signed) }
            /^Suites:/ { n = split($0, s, /[[:space:]]+/); for (i = 2; i <= n; i++) if (s[i] == suite) is_main = 1 }
            END { flush() }
        ' "$deb822" >"$out.tmp"
        if [ -s "$out.tmp" ]; then
            mv "$out.tmp" "$out"
            return 0
        fi
        rm -f "$out.tmp"
    fi
    if [ -f /etc/apt/sources.list ]; then
        line=$(grep -E "^deb[[:space:]].*[[:space:]]${codename}[[:space:]]" /etc/apt/sources.list | head -n1 || true)
        if [ -n "$line" ]; then
            echo "$line" | sed -E "s/[[:space:]]${codename}[[:space:]].*/ ${bpo} main/" \
                >/etc/apt/sources.list.d/mmu-oracle-backports.list
            return 0
        fi
    fi
    echo "install-deps: cannot derive a ${bpo} apt source from /etc/apt" >&2
    return 1
}

qemu_pkgs="qemu-system-x86 qemu-system-arm qemu-system-misc qemu-system-riscv"
tool_pkgs="binutils binutils-aarch64-linux-gnu binutils-riscv64-linux-gnu llvm-19 lld-19"

qemu_ok() {
    for bin in qemu-system-x86_64 qemu-system-aarch64 qemu-system-riscv64 qemu-system-loongarch64; do
        command -v "$bin" >/dev/null 2>&1 || return 1
    done
    major=$(qemu-system-loongarch64 --version | sed -nE '1s/.*version ([0-9]+)\..*/\1/p')
    [ "${major:-0}" -ge 8 ]
}

tools_ok() {
    for bin in as ld aarch64-linux-gnu-as aarch64-linux-gnu-ld riscv64-linux-gnu-as \
        riscv64-linux-gnu-ld llvm-mc-19 ld.lld-19; do
        command -v "$bin" >/dev/null 2>&1 || return 1
    done
}

if qemu_ok && tools_ok; then
    echo "install-deps: everything already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
have_bpo_source || add_bpo_source
apt-get update
if ! qemu_ok; then
    apt-get install -y --no-install-recommends -t "$bpo" $qemu_pkgs
fi
if ! tools_ok; then
    apt-get install -y --no-install-recommends $tool_pkgs
fi
qemu_ok || { echo "install-deps: QEMU >= 8 for every architecture is still missing" >&2; exit 1; }
tools_ok || { echo "install-deps: assemblers are still missing" >&2; exit 1; }
echo "install-deps: done"
