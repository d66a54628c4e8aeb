#!/usr/bin/env bash
# Build kiln's default sandbox root filesystem: Debian bookworm (minbase) with
# python3, packed as an ext4 image that kiln attaches read-only as virtio-blk.
# The guest agent mounts it at a lower dir, puts an overlay with a per-sandbox
# writable layer on top (guest/images/scratch.sh) and switches root into it;
# the image has no init system and no agent.
#
#   target/guest/images/debian.ext4           the image (label kiln-root, no journal)
#   target/guest/images/debian.ext4.sha256    the stamp: "<sha256>  debian.ext4" and,
#                                             as '#' comments, the inputs hash, size, mtime
#   target/guest/images/debian.packages       "name version" of every installed package
#
# Cache: the inputs hash covers this script, debian/packages, the suite, the
# architecture and IMAGE_FORMAT. With a matching stamp whose size and mtime
# match the image, a re-run does nothing (well under a second); --verify
# checks the full SHA-256 instead. debootstrap's downloads are kept in
#   ${KILN_CACHE_DIR:-$HOME/.cache/kiln}/debootstrap
# so a rebuild fetches only the indices.
#
# Mirror: KILN_DEBIAN_MIRROR if set, otherwise the first "bookworm ... main"
# URI of the host's apt sources (/etc/apt/sources.list, then
# /etc/apt/sources.list.d/*.list and deb822 *.sources in apt's order).
#
# The rootfs is unpacked under KILN_IMAGE_WORKDIR (default: the output
# directory, on the local disk; not /tmp, which may be a small tmpfs), and
# the image is written under a temporary name and renamed into place, so an
# interrupted build never leaves a partial image at the output path.
#
# Usage: guest/images/debian/build.sh [--verify] [--force]   (root, to build)
set -euo pipefail

# Bump when the image layout changes in a way the script text does not show.
IMAGE_FORMAT=1
SUITE=bookworm
VARIANT=minbase

script_path=$(readlink -f "${BASH_SOURCE[0]}")
script_dir=$(dirname "$script_path")
repo_root=$(cd "$script_dir/../../.." && pwd)
packages_file="$script_dir/packages"
out_dir="$repo_root/target/guest/images"
name=debian.ext4
out="$out_dir/$name"
stamp="$out.sha256"
manifest="$out_dir/debian.packages"
# debootstrap --cache-dir wants an absolute path.
cache_root=$(realpath -m "${KILN_CACHE_DIR:-$HOME/.cache/kiln}")
deb_cache="$cache_root/debootstrap"

# Host tools the build needs, by package.
build_deps=(debootstrap e2fsprogs)

say() { printf 'debian: %s\n' "$*"; }
die() {
    printf 'debian: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$script_path" | sed '$d; s/^# \{0,1\}//'
}

verify=0 force=0
for arg in "$@"; do
    case $arg in
    --verify) verify=1 ;;
    --force) force=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $arg (see --help)" ;;
    esac
done

[[ -f "$packages_file" ]] || die "package list not found: $packages_file"
# Package names, comments and blank lines dropped.
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$packages_file")
((${#packages[@]} > 0)) || die "$packages_file lists no packages"
arch=$(dpkg --print-architecture 2>/dev/null) || die "dpkg not found: this script needs a Debian-based host"

start_ns=$(date +%s%N)
elapsed() { printf '%.1fs' "$(($(date +%s%N) - start_ns))e-9"; }

# --- cache check (no root, no network) ---------------------------------------
inputs=$({
    printf 'kiln-image-format %s\nsuite %s\nvariant %s\narch %s\npackages %s\n' \
        "$IMAGE_FORMAT" "$SUITE" "$VARIANT" "$arch" "${packages[*]}"
    cat "$script_path"
} | sha256sum | cut -d' ' -f1)

# stamp_field KEY: the value of "# KEY VALUE" in the stamp.
stamp_field() { sed -n "s/^# $1 //p" "$stamp" 2>/dev/null | head -n 1; }
stamp_sha() { sed -n "1s/^\([0-9a-f]\{64\}\)  $name\$/\1/p" "$stamp" 2>/dev/null; }

# write_stamp SHA BUILD_SECONDS: records the image's current size and mtime.
write_stamp() {
    local sha=$1 took=$2 size mtime
    read -r size mtime < <(stat -c '%s %.9Y' "$out")
    {
        printf '%s  %s\n' "$sha" "$name"
        printf '# kiln-image-stamp 1\n'
        printf '# inputs %s\n' "$inputs"
        printf '# size %s\n' "$size"
        printf '# mtime %s\n' "$mtime"
        printf '# suite %s variant %s arch %s format %s\n' "$SUITE" "$VARIANT" "$arch" "$IMAGE_FORMAT"
        printf '# built %s in %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$took"
    } >"$stamp.tmp.$$"
    mv -f "$stamp.tmp.$$" "$stamp"
}

summary() { # summary VERB SHA
    local size
    size=$(stat -c %s "$out")
    printf 'debian: %s %s %d MiB sha256 %s %s\n' "$1" "${out#"$repo_root"/}" \
        $(((size + 1048575) / 1048576)) "${2:0:16}" "$(elapsed)"
}

# 0 when the image at $out is the one the stamp describes for these inputs.
cached_ok() {
    [[ -f "$out" && -f "$stamp" ]] || return 1
    [[ $(stamp_field inputs) == "$inputs" ]] || return 1
    local sha size mtime
    sha=$(stamp_sha)
    [[ -n "$sha" ]] || return 1
    read -r size mtime < <(stat -c '%s %.9Y' "$out")
    if ((verify == 0)) && [[ "$size" == "$(stamp_field size)" && "$mtime" == "$(stamp_field mtime)" ]]; then
        return 0
    fi
    # Slow path (--verify, or the file was touched or copied): hash it.
    say "checking the SHA-256 of ${out#"$repo_root"/}"
    [[ $(sha256sum "$out" | cut -d' ' -f1) == "$sha" ]] || {
        say "image does not match its stamp; rebuilding"
        return 1
    }
    # Same content: refresh the fast-path fields so the next run is instant.
    if [[ "$size" != "$(stamp_field size)" || "$mtime" != "$(stamp_field mtime)" ]]; then
        write_stamp "$sha" "$(stamp_field built | sed 's/.* in //')" 2>/dev/null || true
    fi
    return 0
}

if ((force == 0)) && cached_ok; then
    summary cached "$(stamp_sha)"
    exit 0
fi

# --- from here on we build ----------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "building the image needs root (debootstrap, chroot): sudo $0 $*"

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# Install packages with apt-get; update the indices only if the first try fails.
apt_install() {
    command -v apt-get >/dev/null || die "missing packages: $* (and apt-get is not available)"
    say "installing: $* (apt-get; waits for a running apt/dpkg)"
    local apt=(apt-get -o DPkg::Lock::Timeout=900)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update first"
        "${apt[@]}" update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null ||
            die "apt-get install $* failed"
    fi
}

# Prints the first usable URI for SUITE/main from a one-line-style .list file.
mirror_from_list() {
    awk -v suite="$SUITE" '
        { sub(/^[ \t]+/, "") }
        /^#/ || $1 != "deb" { next }
        {
            i = 2
            if ($i ~ /^\[/) {            # [ option=value ... ]
                while (i <= NF && $i !~ /\]$/) i++
                i++
            }
            if ($(i + 1) != suite) next
            for (c = i + 2; c <= NF; c++) {
                if ($c ~ /^#/) break
                if ($c == "main") { print $i; exit }
            }
        }' "$1"
}

# Prints the first usable URI for SUITE/main from a deb822 .sources file.
mirror_from_deb822() {
    awk -v suite="$SUITE" '
        function has(list, word,   n, a, k) {
            n = split(list, a, /[ \t]+/)
            for (k = 1; k <= n; k++) if (a[k] == word) return 1
            return 0
        }
        function flush(   n, u) {
            if (has(f["types"], "deb") && tolower(f["enabled"]) != "no" &&
                has(f["suites"], suite) && has(f["components"], "main")) {
                n = split(f["uris"], u, /[ \t]+/)
                if (n > 0 && u[1] != "") { print u[1]; found = 1; exit }
            }
            delete f
            key = ""
        }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { if (key != "") f[key] = f[key] " " $0; next }
        {
            p = index($0, ":")
            if (p == 0) next
            key = tolower(substr($0, 1, p - 1))
            v = substr($0, p + 1)
            sub(/^[ \t]+/, "", v)
            sub(/[ \t]+$/, "", v)
            f[key] = v
        }
        END { if (!found) flush() }' "$1"
}

find_mirror() {
    local files=() f uri
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    # apt reads sources.list.d/ in alphanumeric order, both formats mixed.
    while IFS= read -r f; do
        files+=("$f")
    done < <(find /etc/apt/sources.list.d -maxdepth 1 -type f \
        \( -name '*.list' -o -name '*.sources' \) 2>/dev/null | LC_ALL=C sort)
    for f in "${files[@]}"; do
        case $f in
        *.sources) uri=$(mirror_from_deb822 "$f") ;;
        *) uri=$(mirror_from_list "$f") ;;
        esac
        case $uri in
        http://* | https://* | ftp://* | file:/*)
            printf '%s\n' "${uri%/}"
            return 0
            ;;
        esac
    done
    return 1
}

if [[ -n "${KILN_DEBIAN_MIRROR:-}" ]]; then
    mirror=${KILN_DEBIAN_MIRROR%/}
    mirror_from="KILN_DEBIAN_MIRROR"
else
    mirror=$(find_mirror) || die "no '$SUITE main' mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.{list,sources}; set KILN_DEBIAN_MIRROR to a Debian mirror URI (http, https or file)"
    mirror_from="host apt sources"
fi

say "building $SUITE/$VARIANT ($arch) + ${packages[*]}; inputs ${inputs:0:16}"
say "mirror: $mirror (from $mirror_from)"

# --- [1/6] host tools -----------------------------------------------------------
say "[1/6] checking host tools (${build_deps[*]})"
missing=()
for p in "${build_deps[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
# debootstrap checks Release signatures with Debian's archive keyring.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$keyring" ]] || missing+=(debian-archive-keyring)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"
for tool in debootstrap mkfs.ext4 e2fsck chroot; do
    command -v "$tool" >/dev/null || die "$tool not found after installing ${build_deps[*]}"
done

# --- [2/6] work directory, lock, cleanup --------------------------------------
mkdir -p "$out_dir" "$deb_cache"
# One build per output directory at a time (the second waits).
exec 9>"$out_dir/.debian.lock"
if ! flock -n 9; then
    say "waiting for another image build (lock $out_dir/.debian.lock)"
    flock 9
    if ((force == 0)) && cached_ok; then
        summary cached "$(stamp_sha)"
        exit 0
    fi
fi

work="" img_tmp="$out_dir/.$name.tmp.$$"

bs_pid="" progress_pid=""
# stop_debootstrap: TERM its session, wait up to 10 s, then KILL.
stop_debootstrap() {
    local i
    kill -TERM -- "-$bs_pid" 2>/dev/null || kill -TERM "$bs_pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 -- "-$bs_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$bs_pid" 2>/dev/null || true
    wait "$bs_pid" 2>/dev/null || true
}
# unmount_under DIR: lazily unmount everything mounted at or below DIR.
unmount_under() {
    local m
    while IFS= read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v w="$1" '$2 == w || index($2, w "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [[ -n "$bs_pid" ]] && stop_debootstrap
    [[ -n "$progress_pid" ]] && kill "$progress_pid" 2>/dev/null
    # debootstrap mounts /proc, /sys and /dev/pts in the target; an interrupted
    # run can leave them behind. Unmount (deepest first) before removing.
    if [[ -n "${work:-}" && -d "$work" ]]; then
        unmount_under "$work"
        rm -rf --one-file-system "$work"
    fi
    rm -f "$img_tmp" "$manifest.tmp.$$" "$stamp.tmp.$$"
    if ((rc != 0)); then
        local what="build failed"
        ((rc == 130 || rc == 143)) && what="interrupted"
        printf 'debian: %s after %s; nothing was written to %s\n' "$what" "$(elapsed)" "${out#"$repo_root"/}" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work_base="${KILN_IMAGE_WORKDIR:-$out_dir}"
mkdir -p "$work_base"
# Trees left by a build that was killed outright (SIGKILL, power loss): with
# the lock held, nothing else uses the ones in the output directory.
for stale in "$out_dir"/.debian-build.*; do
    [[ -d "$stale" ]] || continue
    say "removing a stale build tree: $stale"
    unmount_under "$stale"
    rm -rf --one-file-system "$stale"
done
rm -f "$out_dir"/."$name".tmp.*
work=$(mktemp -d "$work_base/.debian-build.XXXXXX")
root="$work/root"
log="$work/debootstrap.log"

# The unpacked tree needs device nodes and exec (chroot) and ~1 GiB.
opts=$(findmnt -no OPTIONS --target "$work" 2>/dev/null || true)
case ",$opts," in
*,nodev,* | *,noexec,*)
    die "$work_base is mounted ${opts}; set KILN_IMAGE_WORKDIR to a directory on a local disk without nodev/noexec"
    ;;
esac
avail_mib=$(df --output=avail -BM "$work" | tail -n 1 | tr -dc 0-9)
((avail_mib >= 1024)) ||
    die "$work_base has ${avail_mib} MiB free; the build needs ~1 GiB (set KILN_IMAGE_WORKDIR elsewhere)"
say "[2/6] work directory $work (${avail_mib} MiB free)"

# --- [3/6] debootstrap -----------------------------------------------------------
include=$(
    IFS=,
    echo "${packages[*]}"
)
say "[3/6] debootstrap --variant=$VARIANT --include=$include $SUITE (downloads cached in $deb_cache)"
# Condense debootstrap's output to one line per stage, plus warnings/errors.
progress() {
    local line kind last="" t0=$SECONDS
    while IFS= read -r line; do
        case $line in
        "I: Retrieving InRelease"* | "I: Retrieving Release"* | "I: Checking Release"* | \
            "I: Retrieving Packages"* | "I: Validating Packages"*) kind=release line="I: Retrieving the archive index" ;;
        "I: Resolving dependencies"*) kind=resolve ;;
        "I: Retrieving "* | "I: Validating "*) kind=fetch line="I: Retrieving packages" ;;
        "I: Extracting "*) kind=extract line="I: Extracting packages" ;;
        "I: Installing core packages"*) kind=core ;;
        "I: Unpacking the base system"*) kind=unpack ;;
        "I: Configuring the base system"*) kind=configure ;;
        "I: Base system installed"*) kind=finished ;;
        W:* | E:*) kind="$line" ;;
        *) continue ;;
        esac
        if [[ "$kind" != "$last" ]]; then
            printf 'debian:   %s (%ds)\n' "$line" $((SECONDS - t0))
            last=$kind
        fi
    done
}
# Serialize users of the shared download cache.
exec 8>"$deb_cache/.lock"
flock 8
# debootstrap runs in its own session: its dpkg/chroot children must not
# see the terminal's Ctrl-C halfway through; instead the trap stops the whole
# session, waits for it and only then removes the tree. `wait` (unlike a
# foreground command) lets the INT/TERM trap run at once.
: >"$log"
setsid debootstrap --variant="$VARIANT" --arch="$arch" --components=main \
    --include="$include" --cache-dir="$deb_cache" --keyring="$keyring" \
    "$SUITE" "$root" "$mirror" </dev/null >"$log" 2>&1 &
bs_pid=$!
tail -n +1 -f --pid="$bs_pid" "$log" | progress &
progress_pid=$!
rc=0
wait "$bs_pid" || rc=$?
bs_pid=""
wait "$progress_pid" || true
progress_pid=""
flock -u 8
if ((rc != 0)); then
    printf 'debian: last lines of the debootstrap log:\n' >&2
    tail -n 25 "$log" >&2
    [[ -f "$root/debootstrap/debootstrap.log" ]] && tail -n 25 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (exit $rc)"
fi
[[ -x "$root/usr/bin/python3" ]] || die "debootstrap finished but $root/usr/bin/python3 is missing"

# --- [4/6] trim, configure, self-check ------------------------------------------------
say "[4/6] trimming and configuring the tree"
before_kib=$(du -sx --block-size=1K "$root" | cut -f1)
(
    cd "$root"
    # Package caches and indices (apt-get update rebuilds them when needed).
    find var/cache/apt var/lib/apt/lists -maxdepth 2 -type f -delete
    rm -f var/cache/debconf/*-old var/lib/dpkg/*-old
    # Documentation: man, info, lintian, doc (licences kept: copyright files).
    rm -rf usr/share/man/* usr/share/info/* usr/share/lintian usr/share/linda
    find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find usr/share/doc -mindepth 1 -depth -type d -empty -delete
    # Message catalogues: only C is left (C.UTF-8 lives in /usr/lib/locale and stays).
    find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    # Logs of the build itself.
    find var/log -type f -delete
    rm -rf debootstrap
    # Python's __pycache__ is kept on purpose: the image is read-only, so
    # without it every sandbox would recompile the stdlib into its writable
    # layer. (For the same reason mtimes are not normalised: .pyc files are
    # validated against the source's mtime.)
)
# Keep packages installed later inside a sandbox just as lean.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/kiln-nodoc" <<'EOF'
# kiln image: no documentation or translations (see docs/IMAGES.md).
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
printf 'kiln\n' >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	kiln
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# debootstrap copied the host's resolver config; a sandbox has no network
# unless granted, and then the agent writes its nameservers here.
rm -f "$root/etc/resolv.conf"
printf '# kiln: no network unless granted; the agent writes nameservers here.\n' >"$root/etc/resolv.conf"
# Empty machine-id: each sandbox gets its identity at boot, not from the image.
rm -f "$root/etc/machine-id"
: >"$root/etc/machine-id"
for d in proc sys dev run mnt; do
    mkdir -p "$root/$d"
done
mkdir -p "$root/tmp" "$root/var/tmp" "$root/root"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0755 "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/mnt"
chmod 0700 "$root/root"
printf 'kiln-debian %s %s format %s inputs %s\n' "$SUITE" "$arch" "$IMAGE_FORMAT" "$inputs" >"$root/etc/kiln-image"

# Self-check: the image's own python3 runs (no /proc or /dev needed for this).
py_out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    chroot "$root" /usr/bin/python3 -c 'print(6*7)' 2>&1) || py_out="failed: $py_out"
[[ "$py_out" == 42 ]] || die "self-check: chrooted python3 -c 'print(6*7)' printed '$py_out', expected 42"
py_version=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" /usr/bin/python3 -c \
    'import sys, ssl; print("%d.%d.%d" % sys.version_info[:3])') ||
    die "self-check: python3 cannot import ssl in the image"
# shellcheck disable=SC2016 # dpkg-query's ${Field}, not a shell expansion
for p in "${packages[@]}"; do
    [[ $(chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] ||
        die "self-check: package $p is not installed in the image"
done
# shellcheck disable=SC2016
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' | LC_ALL=C sort >"$manifest.tmp.$$"
npkgs=$(wc -l <"$manifest.tmp.$$")

# --- [5/6] pack ----------------------------------------------------------------------
used_kib=$(du -sx --block-size=1K "$root" | cut -f1)
nfiles=$(find "$root" -xdev | wc -l)
# Inodes: what the tree needs + 20% + 1024; the writable layer is a separate
# disk, so the lower image needs no spare inodes beyond that.
inodes=$((nfiles + nfiles / 5 + 1024))
# Size: content + 20% + inode tables (256 B each) + 64 MiB slack.
size_mib=$(((used_kib * 6 / 5 + inodes / 4 + 1023) / 1024 + 64))
say "[5/6] mkfs.ext4 -d: $((used_kib / 1024)) MiB in $nfiles files (trimmed $(((before_kib - used_kib) / 1024)) MiB) -> ${size_mib} MiB image"
# Fixed UUID and directory hash seed from the inputs hash, fixed superblock
# times: two builds from the same tree give the same metadata where cheap.
uuid=$(printf '%s' "$inputs" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
rm -f "$img_tmp"
truncate -s "${size_mib}M" "$img_tmp"
# -T default: without it mke2fs picks the "small" type below 512 MiB (1 KiB
# blocks). No journal: the image is only ever mounted read-only. -m 0: no
# blocks reserved for root on a read-only filesystem.
if ! E2FSPROGS_FAKE_TIME=${SOURCE_DATE_EPOCH:-1700000000} mkfs.ext4 -q -F -T default -b 4096 -I 256 \
    -N "$inodes" -m 0 -L kiln-root -U "$uuid" -O ^has_journal \
    -E root_owner=0:0,hash_seed="$uuid",nodiscard -d "$root" "$img_tmp" >"$work/mkfs.log" 2>&1; then
    cat "$work/mkfs.log" >&2
    die "mkfs.ext4 -d failed"
fi

# --- [6/6] check and install -----------------------------------------------------------
say "[6/6] e2fsck -fn and installing ${out#"$repo_root"/}"
e2fsck -fn "$img_tmp" >"$work/fsck.log" 2>&1 || {
    cat "$work/fsck.log" >&2
    die "e2fsck -fn found problems in the new image"
}
debugfs -R 'ls -l /usr/bin' "$img_tmp" 2>/dev/null | grep -q ' python3 *$' ||
    die "the new image has no /usr/bin/python3"
sha=$(sha256sum "$img_tmp" | cut -d' ' -f1)
took=$((($(date +%s%N) - start_ns) / 1000000000))s
rm -f "$stamp"
mv -f "$manifest.tmp.$$" "$manifest"
mv -f "$img_tmp" "$out"
write_stamp "$sha" "$took"
say "python $py_version, $npkgs packages (list: ${manifest#"$repo_root"/})"
summary built "$sha"
