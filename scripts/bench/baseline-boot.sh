#!/usr/bin/env bash
# baseline-boot.sh DISK KERNEL INITRD
#
# The benchmark baseline, not part of envctl: what a user would write by
# hand to get an SSH-able VM from the same image: a genisoimage cloud-init
# seed, a qemu-img overlay, virt-install, and an ssh retry loop. It prints
# the seconds from virt-install to the first successful ssh, then removes
# the VM. Used by `make bench` (cmd/envctl/bench_test.go).
set -euo pipefail
disk=$1 kernel=$2 initrd=$3
name=envctl-baseline-$$
work=$(mktemp -d)
cleanup() {
  virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1 || true
  virsh -q -c qemu:///system undefine "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
cat > "$work/user-data" <<EOT
#cloud-config
disable_root: false
ssh_authorized_keys: [$(cat "$work/key.pub")]
EOT
echo "instance-id: $name" > "$work/meta-data"
genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock "$work/user-data" "$work/meta-data"
qemu-img create -q -f qcow2 -F raw -b "$disk" "$work/disk.qcow2" 10G
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s.%N)
VIRTINSTALL_OSINFO_DISABLE_REQUIRE=1 virt-install --connect qemu:///system --name "$name" \
  --virt-type qemu --memory 2048 --vcpus 2 --import --noautoconsole --graphics none \
  --boot "kernel=$kernel,initrd=$initrd,kernel_args=root=/dev/vda rw console=ttyS0 net.ifnames=0" \
  --disk "path=$work/disk.qcow2,format=qcow2,bus=virtio" \
  --disk "path=$work/seed.iso,format=raw,bus=virtio,readonly=on" \
  --network none \
  --qemu-commandline="-netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22 -device virtio-net-pci,netdev=n0,bus=pci.0,addr=0x10" \
  >/dev/null
until ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 \
  -i "$work/key" -p "$port" root@127.0.0.1 true 2>/dev/null; do
  sleep 1
  if [ "$(echo "$(date +%s.%N) - $start > 600" | bc)" = 1 ]; then echo "baseline: no ssh after 600s" >&2; exit 3; fi
done
echo "$(date +%s.%N) - $start" | bc
