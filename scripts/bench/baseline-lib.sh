# baseline-lib.sh: sourced by the benchmark baselines, not part of envctl.
# What a user would write by hand to get an SSH-able VM from the same
# image: a genisoimage cloud-init seed, a qemu-img overlay, virt-install,
# and an ssh retry loop.

name=envctl-baseline-$$
# Where QEMU's own user (libvirt-qemu) may read, as a hand-written setup
# puts its disks: libvirt's images directory.
work=$(mktemp -d /var/lib/libvirt/images/envctl-baseline.XXXXXX)
chmod 0755 "$work"
cleanup() {
  [ -n "${fwd:-}" ] && kill "$fwd" 2>/dev/null || true
  virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1 || true
  virsh -q -c qemu:///system undefine "$name" >/dev/null 2>&1 || true
  # virt-install defined a storage pool for the disks' directory.
  virsh -q -c qemu:///system pool-destroy "${work##*/}" >/dev/null 2>&1 || true
  virsh -q -c qemu:///system pool-undefine "${work##*/}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
sshopts=(-q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5)
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# stage_image DISK KERNEL INITRD: copies the image where QEMU may read it
# (envctl's cache is in a closed home) and sets $disk, $kernel and
# $initrd to the copies. Not timed.
stage_image() {
  cp --sparse=always "$1" "$work/base.raw"
  cp "$2" "$work/vmlinuz"
  cp "$3" "$work/initrd.img"
  chmod 0644 "$work/base.raw" "$work/vmlinuz" "$work/initrd.img"
  disk=$work/base.raw kernel=$work/vmlinuz initrd=$work/initrd.img
}

# boot_vm DISK KERNEL INITRD: boots, sets $port and $key, returns when ssh answers.
boot_vm() {
  local disk=$1 kernel=$2 initrd=$3
  key=$work/key
  ssh-keygen -q -t ed25519 -N '' -f "$key"
  cat > "$work/user-data" <<EOT
#cloud-config
disable_root: false
ssh_authorized_keys: [$(cat "$key.pub")]
EOT
  echo "instance-id: $name" > "$work/meta-data"
  genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock "$work/user-data" "$work/meta-data"
  qemu-img create -q -f qcow2 -F raw -b "$disk" "$work/disk.qcow2" 10G
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local start; start=$(now)
  VIRTINSTALL_OSINFO_DISABLE_REQUIRE=1 virt-install --connect qemu:///system --name "$name" \
    --virt-type qemu --memory 2048 --vcpus 2 --import --noautoconsole --graphics none \
    --boot "kernel=$kernel,initrd=$initrd,kernel_args=root=/dev/vda rw console=ttyS0 net.ifnames=0" \
    --disk "path=$work/disk.qcow2,format=qcow2,bus=virtio" \
    --disk "path=$work/seed.iso,format=raw,bus=virtio,readonly=on" \
    --network none \
    --qemu-commandline="-netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22 -device virtio-net-pci,netdev=n0,bus=pci.0,addr=0x10" \
    >/dev/null
  until ssh "${sshopts[@]}" -i "$key" -p "$port" root@127.0.0.1 true 2>/dev/null; do
    sleep 1
    if [ "$(echo "$(now) - $start > 600" | bc)" = 1 ]; then echo "baseline: no ssh after 600s" >&2; exit 3; fi
  done
}

g() { ssh "${sshopts[@]}" -i "$key" -p "$port" root@127.0.0.1 "$@"; }
