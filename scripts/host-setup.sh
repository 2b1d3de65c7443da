#!/usr/bin/env bash
# host-setup.sh: make this host able to run envctl VMs, idempotently.
# Installs the Debian packages envctl needs (libvirt, QEMU, mmdebstrap, and
# what the gomod builds, the crun example, the snapshot test and the image store test (a real registry on 127.0.0.1) use), lets QEMU run as root, and
# starts virtlogd and libvirtd when no init system does (containers and CI
# machines without systemd). Never starts libvirt's `default` network.
set -euo pipefail

packages=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
  mmdebstrap e2fsprogs dpkg-dev libseccomp-dev gcc make pkg-config crun
  openssh-server docker-registry)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their services here (openssh-server would
  # listen on every address): only the tests start sshd, on 127.0.0.1.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

conf=/etc/libvirt/qemu.conf
if ! grep -q '^user = "root"' "$conf"; then
  printf '\n# envctl: image files and /dev/kvm are root-only here\nuser = "root"\ngroup = "root"\n' >> "$conf"
fi

sock=/var/run/libvirt/libvirt-sock
if [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "host-setup: libvirtd already answers on $sock"
  exit 0
fi
if [ -d /run/systemd/system ]; then
  systemctl start virtlogd libvirtd
else
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
fi
for _ in $(seq 1 50); do
  [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1 && { echo "host-setup: libvirtd is up"; exit 0; }
  sleep 0.2
done
echo "host-setup: libvirtd did not come up; see /var/log/libvirt/" >&2
exit 3
