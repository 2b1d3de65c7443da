package libvirt

import (
	"fmt"
	"os"
	"strings"
)

// Accel picks the domain type for --accel kvm|tcg|auto. auto uses KVM only
// when /dev/kvm opens read-write and the CPU flags show vmx or svm: nested
// setups (such as PVM) expose /dev/kvm yet crash KVM guests. It returns the
// libvirt domain type ("kvm" or "qemu") and a warning when it fell back.
func Accel(requested string) (domainType, warning string, err error) {
	return accel(requested, "/dev/kvm", "/proc/cpuinfo")
}

func accel(requested, kvmPath, cpuinfoPath string) (string, string, error) {
	switch requested {
	case "tcg":
		return "qemu", "", nil
	case "kvm":
		if ok, why := kvmUsable(kvmPath, cpuinfoPath); !ok {
			return "", "", fmt.Errorf("--accel kvm: KVM is not usable here (%s); use --accel tcg or auto", why)
		}
		return "kvm", "", nil
	case "auto", "":
		if ok, why := kvmUsable(kvmPath, cpuinfoPath); ok {
			return "kvm", "", nil
		} else {
			return "qemu", "KVM unavailable (" + why + "): using TCG software emulation, expect boots 5-10x slower", nil
		}
	}
	return "", "", fmt.Errorf("--accel %q: use kvm, tcg or auto", requested)
}

func kvmUsable(kvmPath, cpuinfoPath string) (bool, string) {
	f, err := os.OpenFile(kvmPath, os.O_RDWR, 0)
	if err != nil {
		return false, kvmPath + " cannot be opened: " + err.Error()
	}
	f.Close()
	b, err := os.ReadFile(cpuinfoPath)
	if err != nil {
		return false, "cannot read " + cpuinfoPath
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, flag := range strings.Fields(line) {
			if flag == "vmx" || flag == "svm" {
				return true, ""
			}
		}
		break
	}
	return false, kvmPath + " exists but the CPU has no vmx/svm flag (nested virtualisation without hardware support)"
}
