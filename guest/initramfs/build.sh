#!/usr/bin/env bash
# Build kiln's smallest guest root filesystem: an initramfs whose /init is
# kiln-agent, built as a static binary.
#
#   target/x86_64-unknown-linux-gnu/release/kiln-agent   the static agent
#   target/guest/initramfs.cpio                          the newc archive
#
# The archive holds the directories dev proc sys tmp run mnt root etc bin sbin usr,
# /init (the agent, 0755), busybox with a symlink per applet (sh, cat, sha256sum, ...:
# the minimal image's userland) and /dev/console (char 5,1) so the kernel can open a
# console for init before devtmpfs is mounted. It is written by mkcpio.py
# (deterministic: uid/gid 0, mtime 0), so neither root nor cpio(1) is needed.
# Re-running is cheap: cargo rebuilds only when the agent changed.
#
# Usage: guest/initramfs/build.sh   (from any directory)
set -euo pipefail

script_path=$(readlink -f "${BASH_SOURCE[0]}")
script_dir=$(dirname "$script_path")
repo_root=$(cd "$script_dir/../.." && pwd)
triple=x86_64-unknown-linux-gnu
target_dir="$repo_root/target"
agent="$target_dir/$triple/release/kiln-agent"
out_rel=target/guest/initramfs.cpio
out="$repo_root/$out_rel"

die() {
    printf 'initramfs: error: %s\n' "$*" >&2
    exit 1
}

command -v cargo >/dev/null || die "cargo not found"
command -v python3 >/dev/null || die "python3 not found"

# --- the agent, statically linked -------------------------------------------
# An explicit --target keeps these RUSTFLAGS away from host builds (and their
# cache) in target/debug and target/release.
(
    cd "$repo_root"
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
        -p kiln-agent --target "$triple" --target-dir "$target_dir"
) || die "cargo build of kiln-agent failed (static glibc needs libc6-dev's libc.a)"
[[ -x "$agent" ]] || die "build succeeded but $agent is missing"

# Static means no ELF interpreter (PT_INTERP): the kernel runs /init with no
# dynamic loader in the initramfs. (glibc's static-pie has a PT_DYNAMIC but no
# interpreter; ldd calls it "statically linked" or "not a dynamic executable".)
python3 - "$agent" <<'PY' || die "$agent is not a static x86-64 ELF executable"
import struct, sys
with open(sys.argv[1], "rb") as f:
    elf = f.read()
if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
    sys.exit("initramfs: not a little-endian ELF64 file")
(machine,) = struct.unpack_from("<H", elf, 18)
if machine != 62:
    sys.exit("initramfs: not an x86-64 executable")
phoff, = struct.unpack_from("<Q", elf, 32)
phentsize, phnum = struct.unpack_from("<HH", elf, 54)
for i in range(phnum):
    (p_type,) = struct.unpack_from("<I", elf, phoff + i * phentsize)
    if p_type == 3:  # PT_INTERP
        sys.exit("initramfs: dynamically linked (has an ELF interpreter)")
PY

# --- busybox: a shell and core tools for commands in the minimal image ----------
# Debian's busybox-static (installed by scripts/setup); every applet is a symlink.
busybox=/bin/busybox
[[ -x $busybox ]] && "$busybox" --list-full >/dev/null 2>&1 ||
    die "$busybox missing: apt-get install busybox-static (scripts/setup does)"
links=()
while read -r applet; do
    case $applet in bin/busybox | linuxrc | sbin/init) continue ;; esac # init is the agent
    links+=(--symlink "$applet:/bin/busybox")
done < <("$busybox" --list-full | sort -u)

# --- the archive ------------------------------------------------------------
mkdir -p "$(dirname "$out")"
python3 "$script_dir/mkcpio.py" -o "$out" \
    --dir dev --dir proc --dir sys --dir tmp:1777 --dir run --dir mnt \
    --dir root:0700 --dir etc --dir bin --dir sbin --dir usr --dir usr/bin --dir usr/sbin \
    --file "init:0755:$agent" \
    --file "bin/busybox:0755:$busybox" \
    "${links[@]}" \
    --char dev/console:0600:5:1 ||
    die "writing $out failed"

size=$(stat -c %s "$out")
printf 'initramfs: %s (%d KiB)\n' "$out_rel" $(((size + 1023) / 1024))
