#!/usr/bin/env bash
# baseline-boot.sh DISK KERNEL INITRD
#
# The benchmark baseline, not part of envctl: boots the image by hand
# (baseline-lib.sh) and prints the seconds from virt-install to the first
# successful ssh, then removes the VM. Used by `make bench`
# (cmd/envctl/bench_test.go).
set -euo pipefail
source "$(dirname "$0")/baseline-lib.sh"
stage_image "$1" "$2" "$3"
start=$(now)
boot_vm "$disk" "$kernel" "$initrd"
since "$start"
