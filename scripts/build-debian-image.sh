#!/usr/bin/env bash
# build-debian-image.sh OUTDIR [SUITE [EXTRA-PACKAGE...]]
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
#   archive.txt  "LISTFILE DATE": the Date of every Release file read
#
# The image behaves like a cloud image: it has no SSH host keys and no users
# with keys; cloud-init NoCloud (or the faster envctl-seed unit, when the
# kernel command line says cloud-init=disabled) takes both from the cidata seed.
# sshd is socket-activated (ssh.socket), so port 22 listens early in boot
# instead of after network.target.
#
# The build is bit-reproducible: the same recipe and the same package
# versions give the same disk, kernel and initrd on any machine. Every
# input that would differ between two builds is fixed:
#   - SOURCE_DATE_EPOCH (the recipe's date) for mmdebstrap, dpkg, the
#     initramfs and every timestamp in the image (mtimes, atimes and, with
#     debugfs, ctimes; mke2fs through E2FSPROGS_FAKE_TIME);
#   - the filesystem UUID and its directory hash seed;
#   - the order files are added in (mke2fs sorts them; LC_ALL=C);
#   - debpython's bytecode is compiled again, hash-based: a root build
#     and a user-namespace build compiled it differently (timestamp or
#     hash);
#   - /tmp is emptied by mmdebstrap itself, after its last apt run;
#   - no build-time randomness: empty machine-id, no SSH host keys, no
#     random seed, no logs or caches, /etc/shadow's "last changed" day;
#   - the guest's apt sources are Debian's own, whatever mirror or
#     snapshot the packages came from.
# ENVCTL_APT_SOURCES (one "deb [opts] URL SUITE main" line each) names
# where the packages come from: envctl sets it for a build from a mirror or
# from the snapshot archive at a recorded state; unset, mmdebstrap reads
# Debian's own mirrors (the suite, -updates and -security).
# archive.txt records the Date of every Release file the build read: the
# archive state the packages came from, which the lock records.
# ENVCTL_IMAGE_DEBS_OUT=DIR keeps a copy of every package the image was
# built from: enough to serve as a mirror of that state later.
set -euo pipefail

out=${1:?usage: build-debian-image.sh OUTDIR [SUITE [EXTRA-PACKAGE...]]}
suite=${2:-bookworm}
extra=("${@:3}")
size=${ENVCTL_IMAGE_SIZE:-3G}
# The recipe's date: 2025-01-01T00:00:00Z. Changing it changes every digest.
export SOURCE_DATE_EPOCH=1735689600
fs_uuid=6e766374-6c00-4000-8000-000000000001
hash_seed=6e766374-6c00-4000-8000-000000000002

# mkfs.ext4 and debugfs live in sbin, which a normal user's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
for tool in mmdebstrap mkfs.ext4 debugfs; do
  command -v "$tool" >/dev/null || { echo "build-debian-image: $tool not found; install it: apt-get install -y mmdebstrap e2fsprogs" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
work=$(mktemp -d "${out%/}/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

packages=(
  systemd-sysv udev kmod dbus linux-image-cloud-amd64 initramfs-tools
  openssh-server iproute2 cloud-init qemu-guest-agent procps ca-certificates
  # container runtime prerequisites (the guest has no internet)
  e2fsprogs conmon containernetworking-plugins iptables netbase libyajl2 libseccomp2
  "${extra[@]}"
)

# mmdebstrap runs in its unshare mode for every user: as a normal user it
# builds in a user namespace (subordinate ids from /etc/subuid and
# newuidmap, which `make host` sets up); as root it unshares only the
# mount, pid, uts and ipc namespaces. Its output is a tarball either way,
# in which mmdebstrap writes the /dev entries itself: the same recipe and
# packages give the same tarball, and so the same image, whoever builds.
# Hooks run inside the namespace, as its root, and hand what the build
# keeps to the outside with copy-out.
if [ "$(id -u)" -ne 0 ] && ! mmdebstrap --unshare-helper true 2>/dev/null; then
  echo "build-debian-image: as $(id -un), the image build needs a user namespace with subordinate ids: install uidmap and give $(id -un) a range in /etc/subuid and /etc/subgid (\`sudo make host\` does both)" >&2
  exit 2
fi
mm_args=(--mode=unshare --format=tar --variant=minbase --include="$(IFS=,; echo "${packages[*]}")")
# What the build keeps, gathered inside the chroot and copied out.
keep=/var/cache/envctl-out
# With ENVCTL_IMAGE_DEBS_OUT, keep every package: the essential ones right
# after they are extracted (mmdebstrap drops them before the customize
# hooks), then the rest; and the mirror's package lists (lists/), whose
# priorities a snapshot made from these packages needs.
keep_debs='if [ -n "${ENVCTL_IMAGE_DEBS_OUT:-}" ]; then mkdir -p "$1'"$keep"'/debs/lists" && cp -n "$1"/var/cache/apt/archives/*.deb "$1'"$keep"'/debs/" 2>/dev/null; cp "$1"/var/lib/apt/lists/*_Packages "$1'"$keep"'/debs/lists/" 2>/dev/null; true; fi'
mirror_arg=()
while IFS= read -r src; do
  [ -n "$src" ] && mirror_arg+=("$src")
done <<< "${ENVCTL_APT_SOURCES:-}"
# The Release dates the build read, before the lists are dropped.
record_archive='mkdir -p "$1'"$keep"'" && for f in "$1"/var/lib/apt/lists/*Release; do [ -f "$f" ] || continue; printf "%s %s\n" "${f##*/}" "$(sed -n "s/^Date: //p" "$f" | head -n 1)"; done > "$1'"$keep"'/archive.txt"'
# The package set, the kernel and the initramfs, once the initramfs is made.
record_boot='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "$1'"$keep"'/packages.txt" && cp -L "$1/vmlinuz" "$1'"$keep"'/vmlinuz" && cp -L "$1/initrd.img" "$1'"$keep"'/initrd.img"'

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
  --extract-hook="$keep_debs" \
  --customize-hook="$keep_debs" \
  --customize-hook="$record_archive" \
  --customize-hook='printf "deb http://deb.debian.org/debian %s main\ndeb http://deb.debian.org/debian %s-updates main\ndeb http://security.debian.org/debian-security %s-security main\n" '"$suite $suite $suite"' > "$1/etc/apt/sources.list"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  --customize-hook='chroot "$1" env SOURCE_DATE_EPOCH='"$SOURCE_DATE_EPOCH"' update-initramfs -u -k all >/dev/null' \
  --customize-hook='chroot "$1" env SOURCE_DATE_EPOCH='"$SOURCE_DATE_EPOCH"' python3 -m compileall -q -f --invalidation-mode checked-hash /usr/share/python3/debpython >/dev/null' \
  --customize-hook="$record_boot" \
  --customize-hook='copy-out '"$keep"' '"$work" \
  --customize-hook='rm -rf "$1'"$keep"'"' \
  --customize-hook='rm -rf "$1"/var/log/* "$1"/var/cache/apt/*.bin "$1"/var/cache/ldconfig/aux-cache "$1"/var/lib/systemd/random-seed "$1"/var/lib/dbus/machine-id "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/etc/*- "$1"/var/tmp/*' \
  --customize-hook='sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\\1'"$((SOURCE_DATE_EPOCH / 86400))"':/" "$1/etc/shadow"' \
  "$suite" "$work/root.tar" "${mirror_arg[@]}"

kept="$work/${keep##*/}"
mv "$kept/packages.txt" "$kept/vmlinuz" "$kept/initrd.img" "$kept/archive.txt" "$work/"
if [ -n "${ENVCTL_IMAGE_DEBS_OUT:-}" ] && [ -d "$kept/debs" ]; then
  mkdir -p "$ENVCTL_IMAGE_DEBS_OUT/lists"
  cp -n "$kept"/debs/*.deb "$ENVCTL_IMAGE_DEBS_OUT"/ 2>/dev/null || true
  cp "$kept"/debs/lists/*_Packages "$ENVCTL_IMAGE_DEBS_OUT/lists/" 2>/dev/null || true
fi

# The tarball becomes the ext4 disk inside the same namespace, so that
# every file has its owner as the chroot saw it. The tarball goes in on
# stdin and the (sparse) disk comes out as a tarball on stdout: the
# namespace's root may not reach this user's directories.
# Inside: the tree in a fixed order and with fixed times (extracted from
# the name-sorted tarball onto a tmpfs, whose directory order is its
# creation order; every atime and mtime set to the recipe's date); the
# device nodes, which no user namespace may create, are made by debugfs
# with the disk; mke2fs copies each file's change time, which no one can
# set, so debugfs sets it.
stamp=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S)
to_disk=$(cat <<'INNER'
set -euo pipefail
tree=$(mktemp -d /dev/shm/envctl-image.XXXXXX)
scratch=$(mktemp -d /var/tmp/envctl-image.XXXXXX)
trap 'rm -rf "$tree" "$scratch"' EXIT
# mmdebstrap's device nodes: name, type, major, minor (all 0666 root:root).
devices='console c 5 1
full c 1 7
null c 1 3
ptmx c 5 2
random c 1 8
tty c 5 0
urandom c 1 9
zero c 1 5'
excludes=()
while read -r name _; do excludes+=(--exclude="./dev/$name"); done <<< "$devices"
tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' "${excludes[@]}" -xpf -
find "$tree" -depth -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
truncate -s "$SIZE" "$scratch/disk.raw"
LC_ALL=C E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L rootfs -U "$FS_UUID" \
  -E "hash_seed=$HASH_SEED,lazy_itable_init=0,lazy_journal_init=0" -d "$tree" "$scratch/disk.raw"
{
  # debugfs's mknod makes its name in the current directory.
  echo 'cd /dev'
  while read -r name kind major minor; do
    printf 'mknod %s %s %s %s\n' "$name" "$kind" "$major" "$minor"
    for field in "mode 020666" "uid 0" "gid 0" "atime $STAMP" "mtime $STAMP" "crtime $STAMP"; do
      printf 'sif /dev/%s %s\n' "$name" "$field"
    done
  done <<< "$devices"
  echo 'cd /'
  { (cd "$tree" && find . -mindepth 1 -printf '%P\n'); while read -r name _; do echo "dev/$name"; done <<< "$devices"; } |
    LC_ALL=C sort | sed -e 's/"/\\"/g' |
    awk -v t="$STAMP" '{ print "sif \"/" $0 "\" ctime " t } END { print "sif / ctime " t }'
} > "$scratch/fix.debugfs"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$scratch/fix.debugfs" "$scratch/disk.raw" >/dev/null 2>"$scratch/debugfs.err" ||
  { cat "$scratch/debugfs.err" >&2; exit 1; }
# debugfs goes on after a failed command: a node it missed is wrong.
if grep -v '^debugfs ' "$scratch/debugfs.err" | grep -q .; then
  echo "build-debian-image: debugfs could not make or set every inode:" >&2; cat "$scratch/debugfs.err" >&2; exit 1
fi
tar -C "$scratch" --sparse -cf - disk.raw
INNER
)
SIZE=$size FS_UUID=$fs_uuid HASH_SEED=$hash_seed STAMP=$stamp SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH \
  mmdebstrap --unshare-helper bash -c "$to_disk" < "$work/root.tar" | tar -C "$work" -xf -
rm -f "$work/root.tar"
[ -s "$work/disk.raw" ] || { echo "build-debian-image: the disk was not made" >&2; exit 1; }

mv "$work/disk.raw" "$work/vmlinuz" "$work/initrd.img" "$work/packages.txt" "$work/archive.txt" "$out/"
echo "built $out/disk.raw $out/vmlinuz $out/initrd.img $out/packages.txt $out/archive.txt"
