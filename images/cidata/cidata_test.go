package cidata

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kdomanski/iso9660"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

func TestSeedISO(t *testing.T) {
	user, _ := NewKeyPair("envctl-user")
	host, _ := NewKeyPair("envctl-host")
	cfg := Config{InstanceID: "env-1", Hostname: "envctl-abc", UserKey: user.Authorized, HostKey: host}
	b, err := ISO(cfg)
	if err != nil {
		t.Fatal(err)
	}
	img, err := iso9660.OpenImage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	label, _ := img.Label()
	if label != "cidata" {
		t.Errorf("label %q", label)
	}
	files, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for k, v := range files {
		got[k] = string(v)
	}
	for _, name := range []string{"user-data", "meta-data", "envctl/authorized_keys", "envctl/ssh_host_ed25519_key", "envctl/ssh_host_ed25519_key.pub"} {
		if _, ok := got[name]; !ok {
			t.Errorf("seed lacks %s (has %v)", name, keys(got))
		}
	}
	ud := got["user-data"]
	if !strings.HasPrefix(ud, "#cloud-config\n") {
		t.Errorf("user-data header: %q", ud[:20])
	}
	var doc struct {
		Keys     map[string]string `yaml:"ssh_keys"`
		Auth     []string          `yaml:"ssh_authorized_keys"`
		NoRoot   bool              `yaml:"disable_root"`
		Hostname string            `yaml:"hostname"`
	}
	if err := yaml.Unmarshal([]byte(ud), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Auth[0] != user.Authorized || doc.NoRoot || doc.Hostname != "envctl-abc" {
		t.Errorf("user-data %+v", doc)
	}
	// The injected private host key must be the one envctl pins.
	signer, err := ssh.ParsePrivateKey([]byte(doc.Keys["ed25519_private"]))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), host.Public.Marshal()) {
		t.Error("seed host key differs from the pinned one")
	}
	if !strings.Contains(got["meta-data"], "instance-id: env-1") {
		t.Errorf("meta-data %q", got["meta-data"])
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
