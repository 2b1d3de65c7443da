#!/usr/bin/env bash
# build-debian-image.sh OUTDIR [SUITE]
#
# Builds a cloud-style Debian image with mmdebstrap from the Debian mirror the
# host's apt uses. It is what `envctl image build debian-12` runs, because
# cloud-image sites may be unreachable (air-gapped CI).
#
# Output in OUTDIR:
#   disk.raw     sparse raw ext4 root filesystem (no partition table, root=/dev/vda)
#   vmlinuz      kernel for direct boot
#   initrd.img   initramfs for direct boot
#   packages.txt "name version" of every installed package
#
# The image behaves like a cloud image: it has no SSH host keys and no users
# with keys; cloud-init NoCloud (or the faster envctl-seed unit, when the
# kernel command line says cloud-init=disabled) takes both from the cidata seed.
# sshd is socket-activated (ssh.socket), so port 22 listens early in boot
# instead of after network.target.
set -euo pipefail

out=${1:?usage: build-debian-image.sh OUTDIR [SUITE]}
suite=${2:-bookworm}
size=${ENVCTL_IMAGE_SIZE:-3G}
mirror=${ENVCTL_DEBIAN_MIRROR:-}

for tool in mmdebstrap mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "build-debian-image: $tool not found; install it: apt-get install -y mmdebstrap e2fsprogs" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
work=$(mktemp -d "${out%/}/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

packages=(
  systemd-sysv udev kmod dbus linux-image-cloud-amd64 initramfs-tools
  openssh-server iproute2 cloud-init qemu-guest-agent procps ca-certificates
  # container runtime prerequisites (the guest has no internet)
  e2fsprogs conmon containernetworking-plugins iptables netbase libyajl2 libseccomp2
)

mm_args=(--variant=minbase --include="$(IFS=,; echo "${packages[*]}")")
[ -n "${mirror}" ] && mirror_arg=("$mirror") || mirror_arg=()

mmdebstrap "${mm_args[@]}" \
  --customize-hook='echo envctl > "$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1 localhost\n127.0.1.1 envctl\n" > "$1/etc/hosts"' \
  --customize-hook='printf "/dev/vda / ext4 defaults,discard 0 1\n" > "$1/etc/fstab"' \
  --customize-hook='mkdir -p "$1/etc/systemd/network" && printf "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/10-dhcp.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer' \
  --customize-hook='chroot "$1" systemctl disable ssh.service' \
  --customize-hook='chroot "$1" systemctl enable ssh.socket' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook=': > "$1/etc/machine-id"' \
  --customize-hook='mkdir -p "$1/etc/cloud/cloud.cfg.d" && printf "datasource_list: [ NoCloud, None ]\nnetwork: {config: disabled}\nlocale: false\n" > "$1/etc/cloud/cloud.cfg.d/99-envctl.cfg"' \
  --customize-hook='upload '"$here"'/guest/envctl-seed /usr/local/sbin/envctl-seed' \
  --customize-hook='chmod 0755 "$1/usr/local/sbin/envctl-seed"' \
  --customize-hook='upload '"$here"'/guest/envctl-seed.service /etc/systemd/system/envctl-seed.service' \
  --customize-hook='upload '"$here"'/guest/envctl-growfs.service /etc/systemd/system/envctl-growfs.service' \
  --customize-hook='chroot "$1" systemctl enable envctl-seed.service envctl-growfs.service' \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  "$suite" "$root" "${mirror_arg[@]}"

chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$work/packages.txt"
cp -L "$root/vmlinuz" "$work/vmlinuz"
cp -L "$root/initrd.img" "$work/initrd.img"
truncate -s "$size" "$work/disk.raw"
mkfs.ext4 -q -F -L rootfs -d "$root" "$work/disk.raw"

mv "$work/disk.raw" "$work/vmlinuz" "$work/initrd.img" "$work/packages.txt" "$out/"
echo "built $out/disk.raw $out/vmlinuz $out/initrd.img $out/packages.txt"
