#!/usr/bin/env bash
# Make (once) the template for a sandbox's writable layer: an empty, sparse
# ext4 file of N MiB (default 2048), label kiln-scratch, root dir 0755 root:root.
#
#   target/guest/images/scratch-<N>.ext4
#
# The template occupies a few MiB on disk whatever N is: mkfs.ext4 runs with
# lazy_itable_init=1,lazy_journal_init=1 and nodiscard, so inode tables and
# the journal stay holes (the guest kernel initialises inode tables in the
# background after mounting read-write). A sandbox gets its own copy with
#
#   cp --sparse=always --reflink=auto target/guest/images/scratch-2048.ext4 <sandbox>/scratch.ext4
#
# which takes milliseconds. The agent mounts it read-write and uses it as the
# overlay's upperdir/workdir above the read-only debian.ext4.
#
# It keeps a journal (unlike the read-only root image): a stopped sandbox's
# layer may be started again, and it must survive the VM being killed.
#
# Re-running with an existing, valid template does nothing. Needs only
# mkfs.ext4 (e2fsprogs), not root. Prints the template's path on stdout.
#
# Usage: guest/images/scratch.sh [SIZE_MIB]
set -euo pipefail

# Bump when the mkfs options below change (it is hashed into the UUID,
# which the validity check compares, so old templates are remade).
SCRATCH_FORMAT=1

script_path=$(readlink -f "${BASH_SOURCE[0]}")
script_dir=$(dirname "$script_path")
repo_root=$(cd "$script_dir/../.." && pwd)
out_dir="$repo_root/target/guest/images"

die() {
    printf 'scratch: error: %s\n' "$*" >&2
    exit 1
}

size_mib=${1:-2048}
if ! [[ "$size_mib" =~ ^[0-9]+$ ]] || ((size_mib < 16 || size_mib > 1048576)); then
    die "size must be a whole number of MiB between 16 and 1048576, got '$size_mib'"
fi
(($# <= 1)) || die "usage: $0 [SIZE_MIB]"
out="$out_dir/scratch-$size_mib.ext4"
label="kiln-scratch"
blocks=$((size_mib * 256)) # 4 KiB blocks

# An existing template is valid when its superblock says what we would make.
valid() {
    local sb
    sb=$(dumpe2fs -h "$out" 2>/dev/null) || return 1
    grep -qx "Filesystem volume name: *$label" <<<"$sb" &&
        grep -qx "Block count: *$blocks" <<<"$sb" &&
        grep -qx "Filesystem OS type: *Linux" <<<"$sb" &&
        grep -q "^Filesystem UUID: *$uuid\$" <<<"$sb"
}

PATH=$PATH:/usr/sbin:/sbin
for tool in mkfs.ext4 dumpe2fs; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y e2fsprogs"
done

# A fixed UUID (from the size and format) keeps the template reproducible;
# every sandbox's copy is a separate VM's disk, so sharing it is harmless.
uuid=$(printf 'kiln-scratch %s %s' "$SCRATCH_FORMAT" "$size_mib" | sha256sum |
    sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')

# The template's data extents, for copying it where the filesystem cannot report holes
# (SEEK_DATA/SEEK_HOLE; e.g. 9p in scripts/harness): "kiln-extents 1 <size> <mtime_ns>",
# then "<offset> <length>" per extent. kiln uses it while size and mtime match.
write_extents() {
    python3 - "$out" <<'PY' || die "cannot write $out.extents"
import os, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
st = os.fstat(fd)
lines, pos = [f"kiln-extents 1 {st.st_size} {st.st_mtime_ns}"], 0
while pos < st.st_size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    lines.append(f"{data} {hole - data}")
    pos = hole
tmp = f"{path}.extents.tmp"
with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
os.replace(tmp, f"{path}.extents")
PY
}

if [[ -f "$out" ]] && valid; then
    [[ "$out.extents" -nt "$out" ]] || write_extents
    printf '%s\n' "$out"
    exit 0
fi

mkdir -p "$out_dir"
tmp="$out_dir/.scratch-$size_mib.ext4.tmp.$$"
trap 'rm -f "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
rm -f "$tmp"
truncate -s "${size_mib}M" "$tmp"
# -T default: never the "small" (1 KiB blocks) or "big"/"huge" types, so the
# block count above holds for every size. -m 0: the layer belongs to the
# sandbox's user, root included, with no reserve.
E2FSPROGS_FAKE_TIME=${SOURCE_DATE_EPOCH:-1700000000} mkfs.ext4 -q -F -T default -b 4096 -I 256 -m 0 \
    -L "$label" -U "$uuid" \
    -E lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0,hash_seed="$uuid" \
    "$tmp" >/dev/null || die "mkfs.ext4 failed for $tmp"
mv -f "$tmp" "$out"
trap - EXIT
valid || die "$out does not read back as expected"
write_extents
printf 'scratch: %s (%d MiB, %d KiB on disk)\n' "${out#"$repo_root"/}" "$size_mib" \
    "$(du -k "$out" | cut -f1)" >&2
printf '%s\n' "$out"
