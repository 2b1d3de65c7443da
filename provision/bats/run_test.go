package bats_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envctl/envctl/provision/bats"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/report"
)

// Real bats 1.11.1 TAP with --timing, as oci_volumes.bats printed it in
// a guest ("in 21034ms"), and the tap13 style ("# in 9120 ms").
const passing = `1..5
ok 1 OCI image volume mount lifecycle in 21034ms
ok 2 OCI image volume SELinux # skip not enforcing
ok 3 OCI image volume does not exist locally # in 9120 ms
ok 4 OCI image volume mount with sub path # in 15877 ms
ok 5 OCI image volume mount with invalid sub path # in 14002 ms
`

const allSkipped = `1..5
ok 1 OCI image volume mount lifecycle # skip requires crictl version "1.31" or newer
ok 2 OCI image volume SELinux # skip requires crictl version "1.31" or newer
ok 3 OCI image volume does not exist locally # skip requires crictl version "1.31" or newer
ok 4 OCI image volume mount with sub path # skip requires crictl version "1.31" or newer
ok 5 OCI image volume mount with invalid sub path # skip requires crictl version "1.31" or newer
`

const failing = `1..2
not ok 1 OCI image volume mount lifecycle # in 20112 ms
# (in test file oci_volumes.bats, line 41)
#   ` + "`" + `[[ $(crictl exec "$CTR_ID" cat "$CONTAINER_PATH/dir/file") == 1 ]]' failed
ok 2 OCI image volume SELinux # skip not enforcing
`

func upload(t *testing.T, name, content string) guest.Upload {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return guest.Upload{Local: p, SHA256: hex.EncodeToString(sum[:])}
}

func TestRunReadsTAPNotTheExitCode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tap      string
		exit     int
		verdict  report.Verdict
		wantErr  string
		firstMsg string
	}{
		{"passes, SELinux skipped", passing, 0, report.VerdictPass, "", ""},
		{"every test skipped, bats exits 0", allSkipped, 0, report.VerdictNotTested, "", `requires crictl version "1.31" or newer`},
		{"a test fails", failing, 1, report.VerdictFail, "", "`[[ $(crictl exec \"$CTR_ID\" cat \"$CONTAINER_PATH/dir/file\") == 1 ]]' failed"},
		{"bats ran nothing", "bats: command not found\n", 127, "", "printed no plan line", ""},
		{"bats bailed out", "1..5\nBail out! setup_file failed\n", 1, "", "bailed out", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, c := guesttest.Connect(t)
			for _, p := range []string{`^mkdir -p `, `^dpkg -i `, `get_images`} {
				srv.Reply(p, guesttest.Reply{})
			}
			srv.Reply(`bats --tap --timing oci_volumes.bats$`, guesttest.Reply{Stdout: tc.tap, Exit: tc.exit})
			cfg := bats.Config{File: "oci_volumes.bats", Dir: "/root/envctl-upstream", MirrorConf: "# conf\n",
				Tree: upload(t, "crio-test.tar", "tar"), Copyimg: upload(t, "copyimg", "elf"), Bats: upload(t, "bats.deb", "deb"),
				CRIO: "/usr/local/bin/crio", Crictl: "/usr/local/bin/crictl", Runtime: "runc", RuntimePath: "/usr/local/bin/runc"}
			res, err := bats.Run(context.Background(), c, cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := report.Tally(report.SuiteUpstream, cfg.File, res.Steps).Verdict; got != tc.verdict {
				t.Errorf("verdict %s, want %s: %+v", got, tc.verdict, res.Steps)
			}
			if tc.firstMsg != "" && res.Steps[0].Message != tc.firstMsg {
				t.Errorf("first step says %q, want %q", res.Steps[0].Message, tc.firstMsg)
			}
			if res.Steps[0].Name != "OCI image volume mount lifecycle" {
				t.Errorf("timing left in the name: %q", res.Steps[0].Name)
			}
			if b, _ := srv.ReadFile(bats.MirrorDropIn); string(b) != "# conf\n" {
				t.Errorf("mirror drop-in %q", b)
			}
			var ran string
			for _, c := range srv.Commands() {
				if strings.Contains(c, "bats --tap") {
					ran = c
				}
			}
			for _, want := range []string{"cd /root/envctl-upstream/test", `"CONTAINER_DEFAULT_RUNTIME=runc"`, `"PATH=/usr/local/bin:`, `"JOBS=1"`, `"COPYIMG_BINARY=/root/envctl-upstream/copyimg"`} {
				if !strings.Contains(ran, want) {
					t.Errorf("bats command lacks %s: %s", want, ran)
				}
			}
		})
	}
}

func TestTimingIsRead(t *testing.T) {
	steps := bats.Steps(bats.ParseTAP(passing))
	if len(steps) != 5 || steps[0].Seconds != 21.03 || steps[1].Status != report.Skip || steps[1].Message != "not enforcing" {
		t.Errorf("steps %+v", steps)
	}
}
