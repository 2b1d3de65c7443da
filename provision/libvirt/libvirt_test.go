package libvirt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestDomainXML(t *testing.T) {
	base := DomainSpec{Name: "envctl-x", Type: "qemu", CPUs: 2, MemoryMiB: 2048, Disk: "/p/d.qcow2", Seed: "/p/s.iso",
		Kernel: "/c/vmlinuz", Initrd: "/c/initrd", Cmdline: "root=/dev/vda", ConsoleLog: "/e/console.log", SSHPort: 2222,
		Metadata: Metadata{ID: "x-1", Profile: "p", PID: 42, Created: "now"}}
	tests := []struct {
		name   string
		mutate func(*DomainSpec)
		want   []string
		absent []string
	}{
		{"tcg direct boot user net", func(*DomainSpec) {}, []string{`type="qemu"`, "<kernel>/c/vmlinuz</kernel>", "hostfwd=tcp:127.0.0.1:2222-:22", "restrict=on", `<source path="/e/console.log">`, "<envctl:id>x-1</envctl:id>", "<envctl:pid>42</envctl:pid>", "<readonly>", `dev="vdb"`}, []string{"host-passthrough", "<boot"}},
		{"kvm disk boot", func(s *DomainSpec) { s.Type, s.Kernel = "kvm", "" }, []string{`type="kvm"`, "host-passthrough", `<boot dev="hd">`}, []string{"<kernel>"}},
		{"online", func(s *DomainSpec) { s.Online = true }, []string{"hostfwd"}, []string{"restrict=on"}},
		{"nat", func(s *DomainSpec) { s.Network = "nat" }, []string{`<interface type="network">`, `network="default"`}, []string{"hostfwd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.mutate(&s)
			x, err := DomainXML(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(x, w) {
					t.Errorf("XML lacks %s\n%s", w, x)
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(x, w) {
					t.Errorf("XML has %s", w)
				}
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(x); err != nil {
				t.Fatalf("XML does not parse back: %v", err)
			}
		})
	}
	bad := base
	bad.Type = "xen"
	if _, err := DomainXML(bad); err == nil {
		t.Error("accepted type xen")
	}
	bad = base
	bad.SSHPort = 0
	if _, err := DomainXML(bad); err == nil {
		t.Error("user networking without a port")
	}
	m, err := ParseMetadata(`<env xmlns="https://envctl.dev/xmlns/env/1"><id>a</id><profile>p</profile><pid>7</pid></env>`)
	if err != nil || m.ID != "a" || m.PID != 7 {
		t.Errorf("metadata %+v %v", m, err)
	}
}

func TestAccel(t *testing.T) {
	dir := t.TempDir()
	kvm := filepath.Join(dir, "kvm")
	os.WriteFile(kvm, nil, 0o666)
	withVMX := filepath.Join(dir, "vmx")
	os.WriteFile(withVMX, []byte("processor : 0\nflags\t\t: fpu vme vmx sse\n"), 0o644)
	noVMX := filepath.Join(dir, "novmx")
	os.WriteFile(noVMX, []byte("flags\t\t: fpu vme sse hypervisor\n"), 0o644)
	tests := []struct {
		req, kvm, cpu, want string
		warn, err           bool
	}{
		{"auto", kvm, withVMX, "kvm", false, false},
		{"auto", kvm, noVMX, "qemu", true, false}, // PVM: /dev/kvm but no vmx/svm
		{"auto", filepath.Join(dir, "none"), withVMX, "qemu", true, false},
		{"tcg", kvm, withVMX, "qemu", false, false},
		{"kvm", kvm, noVMX, "", false, true},
		{"kvm", kvm, withVMX, "kvm", false, false},
		{"hvf", kvm, withVMX, "", false, true},
	}
	for _, tt := range tests {
		got, warn, err := accel(tt.req, tt.kvm, tt.cpu)
		if got != tt.want || (warn != "") != tt.warn || (err != nil) != tt.err {
			t.Errorf("accel(%s, %s, %s) = %q, %q, %v", tt.req, filepath.Base(tt.kvm), filepath.Base(tt.cpu), got, warn, err)
		}
	}
}
