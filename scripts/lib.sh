# Shared helpers for scripts/setup and scripts/test (sourced, not run).

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

say() { printf '%s: %s\n' "${ME:-kiln}" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${ME:-kiln}" "$*" >&2
	exit 1
}

# Installs the Debian packages in "$@" that are missing (as root or through sudo).
apt_ensure() {
	local missing=() p
	for p in "$@"; do
		[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	local sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || die "missing packages: ${missing[*]}; as root: apt-get install -y ${missing[*]}"
		sudo=(sudo)
	fi
	say "installing ${missing[*]} (apt-get)"
	"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Everything kiln's build, tests and harness use from Debian.
PACKAGES=(qemu-system-x86 e2fsprogs busybox-static cpio kmod xz-utils python3
	bc bison flex libelf-dev libssl-dev make gcc linux-source iproute2 debootstrap nftables)

# Kernel, initramfs, images and release binaries.
build_all() {
	apt_ensure "${PACKAGES[@]}"
	"$REPO/guest/kernel/build.sh"
	"$REPO/guest/initramfs/build.sh"
	"$REPO/guest/images/debian/build.sh"
	"$REPO/guest/images/scratch.sh" >/dev/null
	say "building release binaries (cargo build --release)"
	(cd "$REPO" && cargo build --release --workspace --quiet) || die "cargo build --release failed"
}

# Can this host's /dev/kvm run a standard Linux guest? Hardware virtualization shows
# as the vmx/svm CPU flag; without it /dev/kvm (if any) is a software hypervisor such
# as kvm_pvm that cannot boot our kernel. KILN_FORCE_HARNESS=1 forces the harness.
host_kvm_boots() {
	[[ ${KILN_FORCE_HARNESS:-0} != 1 ]] || return 1
	[[ -r /dev/kvm && -w /dev/kvm ]] || return 1
	grep -qwE 'vmx|svm' /proc/cpuinfo || return 1
	timeout 60 "$REPO/target/release/kiln" boot --quiet >/dev/null 2>&1
}

HARNESS_NOTE="this host's /dev/kvm cannot boot a standard Linux guest (no VT-x/AMD-V); using scripts/harness (nested KVM in an emulated VM: slow, but real KVM)"
