//go:build e2e

package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

const matrixBase = `image: debian-12
source: gomod
vm: {cpus: 2, memory: 2GiB, disk: 10GiB}
components:
  cri-o:     {version: "1.34.0", commit: 5dd0877c}
  cri-tools: {version: "1.34.0"}
  runtime:   {name: runc, version: "1.3.6"}
  conmon:    {version: "2.1.6", source: package}
  cni-plugins: {version: "1.1.1", source: package}
test: image-volume-lifecycle
`

func writeProfile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, []byte("name: "+name+"\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type matrixOut struct {
	Reports []upReport `json:"reports"`
	Jobs    int        `json:"jobs"`
	Seconds float64    `json:"seconds"`
	Hosts   []struct {
		URI    string `json:"uri"`
		Cells  int    `json:"cells"`
		Failed string `json:"failed"`
	} `json:"hosts"`
}

// TestE2EMatrixParallel: crictl 1.30.0 and 1.34.0 on CRI-O 1.34.0, two at
// once: one cell passes, the other fails with the diagnosis, and the JUnit
// file has a suite per cell.
func TestE2EMatrixParallel(t *testing.T) {
	profile := writeProfile(t, "e2e-matrix", matrixBase+"matrix:\n  cri-tools: [\"1.30.0\", \"1.34.0\"]\n")
	dir := t.TempDir()
	junit, summary := filepath.Join(dir, "junit.xml"), filepath.Join(dir, "summary.md")
	out, errOut, code := envctl(t, "matrix", profile, "-j", "2", "--junit", junit, "--summary", summary, "-o", "json")
	t.Logf("stderr:\n%s", errOut)
	var m matrixOut
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("matrix -o json: %v\n%s", err, out)
	}
	if code != 1 || m.Jobs != 2 || len(m.Reports) != 2 {
		t.Fatalf("exit %d, jobs %d, %d reports (want 1, 2, 2)", code, m.Jobs, len(m.Reports))
	}
	byCell := map[string]upReport{}
	for _, r := range m.Reports {
		byCell[r.Cell] = r
	}
	if byCell["cri-tools=1.34.0"].Verdict != "pass" || byCell["cri-tools=1.30.0"].Verdict != "fail" {
		t.Errorf("verdicts: %+v", byCell)
	}
	found := false
	for _, d := range byCell["cri-tools=1.30.0"].Diagnosis {
		found = found || strings.Contains(d.Cause, "crictl v1.30.0 does not send CRI Mount.image")
	}
	if !found {
		t.Errorf("no diagnosis for the 1.30.0 cell: %+v", byCell["cri-tools=1.30.0"].Diagnosis)
	}
	var doc struct {
		Suites []struct {
			Name     string `xml:"name,attr"`
			Failures int    `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	b, _ := os.ReadFile(junit)
	if err := xml.Unmarshal(b, &doc); err != nil || len(doc.Suites) != 2 {
		t.Errorf("JUnit: %v %+v", err, doc)
	}
	if md, _ := os.ReadFile(summary); !strings.Contains(string(md), "cri-tools=1.30.0 | FAIL") {
		t.Errorf("summary:\n%s", md)
	}
	sum := byCell["cri-tools=1.30.0"].Seconds + byCell["cri-tools=1.34.0"].Seconds
	t.Logf("2-cell matrix at -j 2: %.0fs wall, %.0fs of cell time", m.Seconds, sum)
	writeBenchNote(t, "matrix-j2", map[string]float64{"wall": m.Seconds, "cells": sum})
	assertClean(t)
}

// TestE2EMatrixEmitGitHub: the fan-out JSON names every cell.
func TestE2EMatrixEmitGitHub(t *testing.T) {
	out, _, code := envctl(t, "matrix", "crictl-matrix", "--emit", "github")
	var m struct {
		Include []map[string]string `json:"include"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || len(m.Include) != 8 || m.Include[0]["cell"] == "" {
		t.Errorf("emit github: exit %d %s", code, out)
	}
}

// sshd runs an OpenSSH server on 127.0.0.1 only, for this test, with a
// host key and a user key made for it. It returns the qemu+ssh URI that
// reaches this machine's libvirt through it.
func sshd(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Skip("no /usr/sbin/sshd: `make host` installs openssh-server")
	}
	dir := t.TempDir()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	writeKey := func(name string, k ed25519.PrivateKey) ssh.PublicKey {
		block, err := ssh.MarshalPrivateKey(k, "envctl-e2e")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		s, _ := ssh.NewSignerFromKey(k)
		return s.PublicKey()
	}
	hostPub, userPub := writeKey("host_key", hostPriv), writeKey("user_key", userPriv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	_ = os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userPub), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostPub))), 0o600)
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/host_key
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
`, port, dir, dir, dir)
	_ = os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	_ = os.MkdirAll("/run/sshd", 0o755)
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	log, _ := os.Create(filepath.Join(dir, "sshd.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			t.Logf("sshd log:\n%s", b)
		}
	})
	for range 50 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Sprintf("qemu+ssh://root@127.0.0.1:%d/system?keyfile=%s/user_key&known_hosts=%s/known_hosts", port, dir, dir)
}

// TestE2ERemoteHostSpread: two --connect entries reach the same libvirt
// daemon two ways, directly and through the test's own loopback sshd as
// qemu+ssh://. With one slot each, the two cells spread one per host, and
// the cell on the qemu+ssh host passes: the base image went up as a
// volume, the accelerator came from the remote capabilities, and the
// guest's SSH port was reached through the host.
func TestE2ERemoteHostSpread(t *testing.T) {
	remote := sshd(t)
	// The "remote" host keeps the pool this state directory uploaded to
	// (about 3 GB); it is this test's, and goes with it.
	before := map[string]bool{}
	for _, p := range strings.Fields(virsh("pool-list", "--all", "--name")) {
		before[p] = true
	}
	t.Cleanup(func() {
		for _, p := range strings.Fields(virsh("pool-list", "--all", "--name")) {
			m := regexp.MustCompile(`<path>(/var/lib/libvirt/images/envctl-[0-9a-f]+)</path>`).FindStringSubmatch(virsh("pool-dumpxml", p))
			if before[p] || m == nil {
				continue
			}
			virsh("pool-destroy", p)
			virsh("pool-undefine", p)
			_ = os.RemoveAll(m[1])
		}
	})
	profile := writeProfile(t, "e2e-remote", matrixBase+"matrix:\n  cri-tools: [\"1.34.0\", \"1.36.0\"]\n")
	out, errOut, code := envctl(t, "matrix", profile, "--connect", "qemu:///system", "--connect", remote, "-o", "json")
	t.Logf("stderr:\n%s", errOut)
	var m matrixOut
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("matrix -o json: %v\n%s", err, out)
	}
	if code != 0 || len(m.Reports) != 2 || len(m.Hosts) != 2 {
		t.Fatalf("exit %d, %d reports, %d hosts\n%s", code, len(m.Reports), len(m.Hosts), out)
	}
	hosts := map[string]string{}
	for _, r := range m.Reports {
		hosts[r.Cell] = r.Host
		if r.Verdict != "pass" {
			t.Errorf("%s on %s: %s %s", r.Cell, r.Host, r.Verdict, r.Error)
		}
	}
	if hosts["cri-tools=1.34.0"] == hosts["cri-tools=1.36.0"] || !strings.HasPrefix(hosts["cri-tools=1.36.0"]+hosts["cri-tools=1.34.0"], "") {
		t.Errorf("cells did not spread over the hosts: %v", hosts)
	}
	onRemote := false
	for _, h := range hosts {
		onRemote = onRemote || strings.HasPrefix(h, "qemu+ssh://")
	}
	if !onRemote || !strings.Contains(errOut, "uploading disk") && !strings.Contains(errOut, "envctl-base-disk") {
		t.Logf("note: upload messages are in verbose output only")
	}
	if !onRemote {
		t.Errorf("no cell ran through qemu+ssh: %v", hosts)
	}
	// A host key that is not in known_hosts is refused, not trusted.
	bad := strings.Replace(remote, "known_hosts=", "known_hosts=/dev/null&x=", 1)
	_, errOut, code = envctl(t, "up", "crio-1.34-runc", "--no-install", "--connect", bad)
	if code == 0 || !strings.Contains(errOut, "knownhosts") && !strings.Contains(errOut, "key") {
		t.Errorf("unknown host key: exit %d %s", code, errOut)
	}
	assertClean(t)
}

// TestE2EBisect: over the cri-tools versions the module proxy serves
// (1.30.0, 1.34.0, 1.36.0, 1.37.0), good 1.37.0 and bad 1.30.0, real runs
// name 1.30.0 first bad and 1.34.0 last good with the seed diagnosis. A
// second bisect reuses every verdict by lock hash and boots nothing.
func TestE2EBisect(t *testing.T) {
	profile := writeProfile(t, "e2e-bisect", matrixBase)
	state := t.TempDir() // a fresh ledger: every probe really runs
	run := func() (map[string]any, string, int, time.Duration) {
		cmd := exec.Command(bin(t), "bisect", profile, "--axis", "cri-tools", "--good", "1.37.0", "--bad", "1.30.0", "-o", "json")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "ENVCTL_STATE_DIR="+state)
		var outb, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &outb, &errb
		start := time.Now()
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		var res map[string]any
		_ = json.Unmarshal([]byte(outb.String()), &res)
		return res, errb.String(), code, time.Since(start)
	}
	res, errOut, code, took := run()
	t.Logf("stderr:\n%s", errOut)
	if code != 0 || res["first_bad"] != "cri-tools=1.30.0" || res["last_good"] != "cri-tools=1.34.0" {
		t.Fatalf("bisect: exit %d %v", code, res)
	}
	if d, _ := res["diagnosis"].(string); !strings.Contains(d, "crictl v1.30.0 does not send CRI Mount.image") {
		t.Errorf("diagnosis %q", d)
	}
	probes, _ := res["probes"].([]any)
	path, _ := res["path"].([]any)
	if len(path) != 4 || len(probes) != 4 {
		t.Errorf("path %v, %d probes", path, len(probes))
	}
	t.Logf("bisect: %d probes in %s", len(probes), took.Round(time.Second))
	writeBenchNote(t, "bisect", map[string]float64{"probes": float64(len(probes)), "wall": took.Seconds()})
	res, errOut, code, took = run()
	if code != 0 || res["first_bad"] != "cri-tools=1.30.0" || !strings.Contains(errOut, "not run again") || took > 2*time.Minute {
		t.Errorf("second bisect: exit %d in %s\n%s", code, took, errOut)
	}
	cmd := exec.Command(bin(t), "status", "-o", "json")
	cmd.Env = append(os.Environ(), "ENVCTL_STATE_DIR="+state)
	if b, _ := cmd.Output(); strings.TrimSpace(string(b)) != "null" && strings.TrimSpace(string(b)) != "[]" {
		t.Errorf("environments left: %s", b)
	}
	assertClean(t)
}

// writeBenchNote leaves a measurement where `make bench` and the closing
// notes find it.
func writeBenchNote(t *testing.T, name string, v map[string]float64) {
	b, _ := json.Marshal(map[string]any{"name": name, "values": v, "when": time.Now().UTC().Format(time.RFC3339)})
	_ = os.WriteFile(filepath.Join(os.TempDir(), "envctl-e2e-"+name+".json"), b, 0o644)
}
