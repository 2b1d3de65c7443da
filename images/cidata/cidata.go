package cidata

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"strings"

	"github.com/kdomanski/iso9660"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

// KeyPair is an ed25519 key in both OpenSSH encodings.
type KeyPair struct {
	PrivatePEM []byte        // OpenSSH private key
	Public     ssh.PublicKey // for verification
	Authorized string        // "ssh-ed25519 AAAA… comment"
}

// NewKeyPair generates an ed25519 key pair.
func NewKeyPair(comment string) (KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encode ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return KeyPair{}, err
	}
	auth := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		auth += " " + comment
	}
	return KeyPair{PrivatePEM: pem.EncodeToMemory(block), Public: sshPub, Authorized: auth}, nil
}

// ParseKeyPair reads a key pair back from its OpenSSH private key (a
// saved guest's keys, reused by a warm start).
func ParseKeyPair(privatePEM []byte, comment string) (KeyPair, error) {
	signer, err := ssh.ParsePrivateKey(privatePEM)
	if err != nil {
		return KeyPair{}, fmt.Errorf("parse private key: %w", err)
	}
	auth := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if comment != "" {
		auth += " " + comment
	}
	return KeyPair{PrivatePEM: privatePEM, Public: signer.PublicKey(), Authorized: auth}, nil
}

// Config is what the seed tells the guest.
type Config struct {
	InstanceID string
	Hostname   string
	// UserKey is authorized for root (envctl drives the guest as root).
	UserKey string
	// HostKey becomes the guest's ed25519 SSH host key.
	HostKey KeyPair
}

// UserData renders the #cloud-config document.
func UserData(cfg Config) ([]byte, error) {
	doc := map[string]any{
		"hostname":            cfg.Hostname,
		"disable_root":        false,
		"ssh_pwauth":          false,
		"ssh_authorized_keys": []string{cfg.UserKey},
		"ssh_deletekeys":      true,
		"ssh_genkeytypes":     []string{},
		"ssh_keys": map[string]string{
			"ed25519_private": string(cfg.HostKey.PrivatePEM),
			"ed25519_public":  cfg.HostKey.Authorized,
		},
		"growpart":       map[string]any{"mode": "auto", "devices": []string{"/"}},
		"resize_rootfs":  true,
		"package_update": false,
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return append([]byte("#cloud-config\n"), b...), nil
}

// MetaData renders the NoCloud meta-data document.
func MetaData(cfg Config) []byte {
	return []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", cfg.InstanceID, cfg.Hostname))
}

// Files lists every file the seed holds, by path.
func Files(cfg Config) (map[string][]byte, error) {
	ud, err := UserData(cfg)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"user-data":                       ud,
		"meta-data":                       MetaData(cfg),
		"envctl/authorized_keys":          []byte(cfg.UserKey + "\n"),
		"envctl/ssh_host_ed25519_key":     cfg.HostKey.PrivatePEM,
		"envctl/ssh_host_ed25519_key.pub": []byte(cfg.HostKey.Authorized + "\n"),
		"envctl/hostname":                 []byte(cfg.Hostname + "\n"),
	}, nil
}

// WriteISO writes the seed as an ISO 9660 volume labelled "cidata".
func WriteISO(w io.Writer, cfg Config) error {
	files, err := Files(cfg)
	if err != nil {
		return err
	}
	iw, err := iso9660.NewWriter()
	if err != nil {
		return fmt.Errorf("cidata: %w", err)
	}
	defer func() { _ = iw.Cleanup() }()
	for _, name := range []string{"user-data", "meta-data", "envctl/authorized_keys", "envctl/ssh_host_ed25519_key", "envctl/ssh_host_ed25519_key.pub", "envctl/hostname"} {
		if err := iw.AddFile(bytes.NewReader(files[name]), name); err != nil {
			return fmt.Errorf("cidata: add %s: %w", name, err)
		}
	}
	if err := iw.WriteTo(w, "cidata"); err != nil {
		return fmt.Errorf("cidata: write ISO: %w", err)
	}
	return nil
}

// ISO returns the seed image bytes.
func ISO(cfg Config) ([]byte, error) {
	var buf bytes.Buffer
	if err := WriteISO(&buf, cfg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Read lists the files of a seed image, by path: the inverse of ISO, for
// tests and fakes that play the guest.
func Read(iso []byte) (map[string][]byte, error) {
	img, err := iso9660.OpenImage(bytes.NewReader(iso))
	if err != nil {
		return nil, fmt.Errorf("cidata: %w", err)
	}
	root, err := img.RootDir()
	if err != nil {
		return nil, fmt.Errorf("cidata: %w", err)
	}
	out := map[string][]byte{}
	var walk func(prefix string, f *iso9660.File) error
	walk = func(prefix string, f *iso9660.File) error {
		children, err := f.GetChildren()
		if err != nil {
			return err
		}
		for _, c := range children {
			name := prefix + c.Name()
			if c.IsDir() {
				if err := walk(name+"/", c); err != nil {
					return err
				}
				continue
			}
			b, err := io.ReadAll(c.Reader())
			if err != nil {
				return err
			}
			out[name] = b
		}
		return nil
	}
	if err := walk("", root); err != nil {
		return nil, fmt.Errorf("cidata: %w", err)
	}
	return out, nil
}
