#!/usr/bin/env bash
# host-setup.sh: make this host able to run envctl VMs, idempotently.
# Installs the Debian packages envctl needs (libvirt, QEMU, mmdebstrap, and
# what the gomod builds, the crun example, the snapshot test and the image
# store test (a real registry on 127.0.0.1) use), lets the invoking user
# (SUDO_USER) build images and run VMs without root, and starts virtlogd and
# libvirtd when no init system does (containers and CI machines without
# systemd). Never starts libvirt's `default` network, and leaves QEMU
# running as libvirt's own unprivileged user.
#
# Run it once with sudo; everything else runs as yourself:
#   - uidmap (newuidmap) and a subordinate id range for SUDO_USER let
#     mmdebstrap build images in a user namespace;
#   - the kvm group lets SUDO_USER's session QEMU use /dev/kvm.
set -euo pipefail

packages=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
  mmdebstrap e2fsprogs dpkg-dev libseccomp-dev gcc make pkg-config crun
  openssh-server docker-registry uidmap sudo)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# As a normal user (`make up` as yourself): check that `sudo make host` ran,
# and change nothing.
if [ "$(id -u)" -ne 0 ]; then
  me=$(id -un)
  why=()
  [ "${#missing[@]}" -eq 0 ] || why+=("packages ${missing[*]} are missing")
  grep -q "^$me:" /etc/subuid 2>/dev/null && grep -q "^$me:" /etc/subgid 2>/dev/null || why+=("$me has no subordinate ids for image builds")
  if [ "${#why[@]}" -gt 0 ]; then
    echo "host-setup: $(IFS=';'; echo "${why[*]}"): run \`sudo make host\` once" >&2
    exit 2
  fi
  echo "host-setup: ready for $me (envctl uses qemu:///session, or qemu:///system where $me may; it starts the session daemon itself)"
  exit 0
fi
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

# Earlier versions made every QEMU on the host run as root; undo that.
# envctl lets QEMU's own user reach the files of a run instead (an ACL
# granting search on closed directories, as virt-manager does).
conf=/etc/libvirt/qemu.conf
restart=false
if grep -q '^# envctl: image files and /dev/kvm are root-only here$' "$conf"; then
  sed -i -E -e '/^# envctl: image files and \/dev\/kvm are root-only here$/,+2{/^# envctl: /d;/^(user|group) = "ro{2}t"$/d}' "$conf"
  sed -i -e '${/^$/d}' "$conf"
  echo "host-setup: removed envctl's user/group root lines from $conf; QEMU runs as libvirt's own user again"
  restart=true
fi

# The invoking user: image builds in a user namespace, KVM for session VMs.
user=${SUDO_USER:-}
if [ -n "$user" ] && [ "$user" != root ] && id "$user" >/dev/null 2>&1; then
  for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$user:" "$f" 2>/dev/null; then
      # The first free range of 65536 above every range given already.
      start=$(awk -F: 'BEGIN { s = 100000 } { if ($2 + $3 > s) s = $2 + $3 } END { print s }' "$f" 2>/dev/null || echo 100000)
      echo "$user:$start:65536" >> "$f"
      echo "host-setup: gave $user subordinate ids $start-$((start + 65535)) in $f (for image builds without root)"
    fi
  done
  if getent group kvm >/dev/null && ! id -nG "$user" | tr ' ' '\n' | grep -qx kvm; then
    usermod -aG kvm "$user"
    echo "host-setup: added $user to the kvm group (log in again for it to apply)"
  fi
fi

sock=/var/run/libvirt/libvirt-sock
if [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
  if ! $restart; then
    echo "host-setup: libvirtd already answers on $sock"
    exit 0
  fi
  if [ -d /run/systemd/system ]; then
    systemctl restart libvirtd
  else
    pkill -x libvirtd || true
    for _ in $(seq 1 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.2; done
  fi
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
