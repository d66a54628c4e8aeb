#!/usr/bin/env bash
# Build kiln's guest kernel: an uncompressed `vmlinux` from Debian's
# `linux-source` package, configured with `allnoconfig` + guest/kernel/config.
#
# The result is cached under
#   ${KILN_CACHE_DIR:-$HOME/.cache/kiln}/kernel/<hash>/vmlinux
# where <hash> is the sha256 of (config fragment + this script + linux-source
# package version), and copied to <repo>/target/guest/vmlinux.
#
# Usage: guest/kernel/build.sh
set -euo pipefail

script_path=$(readlink -f "${BASH_SOURCE[0]}")
script_dir=$(dirname "$script_path")
repo_root=$(cd "$script_dir/../.." && pwd)
fragment="$script_dir/config"
cache_root="${KILN_CACHE_DIR:-$HOME/.cache/kiln}/kernel"
out_dir="$repo_root/target/guest"
out="$out_dir/vmlinux"

# libc6-dev: gcc only recommends it, and kbuild compiles host tools.
build_deps=(bc bison flex libelf-dev libssl-dev make gcc libc6-dev cpio xz-utils)

say() { printf 'kernel: %s\n' "$*"; }
die() {
    printf 'kernel: error: %s\n' "$*" >&2
    exit 1
}

[[ -f "$fragment" ]] || die "config fragment not found: $fragment"

# Install packages with apt-get (as root, or through sudo).
apt_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null ||
            die "missing packages: $*; run as root: apt-get update && apt-get install -y $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || die "missing packages: $* (and apt-get is not available)"
    say "installing: $* (apt-get; waits for a running apt/dpkg)"
    # Lock::Timeout: wait for another apt/dpkg to finish instead of failing.
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 update -qq ||
        die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 \
        install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing_build_deps() {
    local p
    for p in "${build_deps[@]}"; do
        pkg_installed "$p" || printf '%s\n' "$p"
    done
}

# The newest /usr/src/linux-source-*.tar.xz, or empty.
find_tarball() {
    compgen -G '/usr/src/linux-source-*.tar.xz' | sort -V | tail -n 1 || true
}

# --- linux-source: needed to know the version that keys the cache ----------
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script needs a Debian-based host"
tarball=$(find_tarball)
if [[ -z "$tarball" ]]; then
    say "linux-source is not installed"
    # One apt-get run for the source and the build dependencies.
    mapfile -t missing < <(missing_build_deps)
    apt_install linux-source "${missing[@]}"
    tarball=$(find_tarball)
    [[ -n "$tarball" ]] || die "linux-source installed but no /usr/src/linux-source-*.tar.xz found"
fi
src_name=$(basename "$tarball" .tar.xz) # e.g. linux-source-6.1
src_pkg_version=$(dpkg-query -W -f='${Version}' "$src_name" 2>/dev/null) ||
    die "$tarball does not belong to an installed package named $src_name"

# --- cache lookup ---------------------------------------------------------
hash=$({
    cat "$fragment"
    cat "$script_path"
    printf '%s %s\n' "$src_name" "$src_pkg_version"
} | sha256sum | cut -d' ' -f1)
cached="$cache_root/$hash/vmlinux"

install_result() {
    mkdir -p "$out_dir"
    cp -f "$cached" "$out.tmp.$$"
    mv -f "$out.tmp.$$" "$out"
    say "$out ($(du -h "$out" | cut -f1), linux $kernel_version)"
}

if [[ -f "$cached" ]]; then
    kernel_version=$(cat "$cache_root/$hash/version" 2>/dev/null || echo "?")
    say "cached $cached"
    install_result
    exit 0
fi

start=$SECONDS
say "building $src_name ($src_pkg_version), cache key ${hash:0:16}"

# --- [1/5] build dependencies ---------------------------------------------
say "[1/5] checking build dependencies"
mapfile -t missing < <(missing_build_deps)
if ((${#missing[@]} > 0)); then
    apt_install "${missing[@]}"
fi

# Serialize builds sharing the cache (source tree and object directory).
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
    say "waiting for another kernel build (lock $cache_root/.lock)"
    flock 9
fi

# --- [2/5] unpack the source once per package version ----------------------
src_dir="$cache_root/src/$src_name-$src_pkg_version"
if [[ -f "$src_dir/.kiln-unpacked" ]]; then
    say "[2/5] source: $src_dir (already unpacked)"
else
    say "[2/5] unpacking $tarball -> $src_dir"
    rm -rf "$src_dir" "$src_dir.tmp"
    mkdir -p "$src_dir.tmp"
    tar -xf "$tarball" -C "$src_dir.tmp" || die "failed to unpack $tarball"
    [[ -f "$src_dir.tmp/$src_name/Makefile" ]] || die "$tarball does not contain $src_name/Makefile"
    mv "$src_dir.tmp/$src_name" "$src_dir"
    rmdir "$src_dir.tmp"
    touch "$src_dir/.kiln-unpacked"
fi

# One object directory per source version: kbuild rebuilds only what a
# config change affects, so editing the fragment does not cost a full build.
obj_dir="$cache_root/obj/$src_name-$src_pkg_version"
mkdir -p "$obj_dir"
log="$obj_dir/build.log"
: >"$log"

kmake() {
    make -C "$src_dir" O="$obj_dir" KBUILD_BUILD_USER=kiln KBUILD_BUILD_HOST=kiln "$@"
}

# Every CONFIG_X=v line of the fragment must be in .config verbatim, and
# every "# CONFIG_X is not set" must not be set: otherwise a dependency is
# missing and the fragment is not what the kernel gets.
check_config() {
    local config="$1" bad=() line sym
    while IFS= read -r line; do
        grep -qxF -- "$line" "$config" ||
            bad+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$config" || echo 'not present'))")
    done < <(grep -E '^CONFIG_[A-Za-z0-9_]+=' "$fragment")
    while IFS= read -r sym; do
        if grep -qE "^$sym=" "$config"; then
            bad+=("# $sym is not set (got: $(grep -E "^$sym=" "$config"))")
        fi
    done < <(sed -nE 's/^# (CONFIG_[A-Za-z0-9_]+) is not set.*/\1/p' "$fragment")
    if ((${#bad[@]} > 0)); then
        printf 'kernel: error: %d option(s) of %s did not end up in %s:\n' \
            "${#bad[@]}" "$fragment" "$config" >&2
        printf 'kernel:   %s\n' "${bad[@]}" >&2
        printf 'kernel: (usually a dependency of the option is off; add it to the fragment)\n' >&2
        exit 1
    fi
}

# --- [3/5] configure ------------------------------------------------------
say "[3/5] configuring: allnoconfig + $(basename "$(dirname "$fragment")")/config"
if ! kmake KCONFIG_ALLCONFIG="$fragment" allnoconfig >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "configuration failed (full log: $log)"
fi
check_config "$obj_dir/.config"
kernel_version=$(kmake -s kernelrelease 2>/dev/null) || kernel_version="?"

# --- [4/5] build ----------------------------------------------------------
jobs=$(nproc)
say "[4/5] make -j$jobs vmlinux (linux $kernel_version; full log: $log)"
# Condense make's output: one line per 50 compiled files, plus link steps
# and errors, so progress is visible without the full log. (A bash loop, not
# awk: mawk buffers its input from a pipe, which delays the progress lines.)
progress() {
    local line n=0 t0=$SECONDS
    while IFS= read -r line; do
        case $line in
        "  CC "*)
            if ((++n % 50 == 0)); then printf 'kernel:   %5d files compiled (%3ds) %s\n' "$n" $((SECONDS - t0)) "${line##* }"; fi
            ;;
        "  LD "*vmlinux* | "  SORTTAB "*vmlinux* | "  KSYMS "*) printf 'kernel:   %s (%ds)\n' "$line" $((SECONDS - t0)) ;;
        *[Ee]rror* | *warning:*) printf 'kernel:   %s\n' "$line" ;;
        esac
    done
    printf 'kernel:   %d files compiled in %ds\n' "$n" $((SECONDS - t0))
}
if ! kmake -j"$jobs" vmlinux 2>&1 | tee -a "$log" | progress; then
    echo "kernel: last lines of $log:" >&2
    tail -n 40 "$log" >&2
    die "make vmlinux failed (full log: $log)"
fi

# --- [5/5] verify and store ------------------------------------------------
say "[5/5] checking the final .config and storing the result"
check_config "$obj_dir/.config"
vmlinux="$obj_dir/vmlinux"
[[ -f "$vmlinux" ]] || die "build finished but $vmlinux is missing"
# ELF magic + ELFCLASS64 (no dependency on file(1)).
[[ $(head -c 5 "$vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c4602 ]] ||
    die "$vmlinux is not a 64-bit ELF file"
mkdir -p "$cache_root/$hash"
cp -f "$vmlinux" "$cached.tmp.$$"
cp -f "$obj_dir/.config" "$cache_root/$hash/config"
printf '%s\n' "$kernel_version" >"$cache_root/$hash/version"
mv -f "$cached.tmp.$$" "$cached"
say "built $cached in $((SECONDS - start))s"
install_result
