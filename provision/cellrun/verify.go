package cellrun

import (
	"context"
	"encoding/json"
	"os"

	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/crio"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/vm"
)

// stackFile is where an environment keeps what was installed into it, so
// that `envctl verify` can check it again later.
const stackFile = "stack.json"

func saveStack(e *env.Env, parts []crio.Part) error {
	b, err := json.MarshalIndent(parts, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(e.Path(stackFile), b, 0o600)
}

// VerifyEnv runs the drift check again on a kept environment: the sha256
// of every installed file against the lock, every version command, and
// CRI-O's RuntimeVersion through CRI.
func VerifyEnv(ctx context.Context, opts vm.Options, id string) ([]crio.Installed, error) {
	m, err := vm.Attach(ctx, opts, id)
	if err != nil {
		return nil, err
	}
	defer m.Release()
	b, err := os.ReadFile(m.Env.Path(stackFile))
	if err != nil {
		return nil, fault.Inputf("environment %s has nothing installed to verify (%v); it was booted with --no-install", m.Env.ID, err)
	}
	var parts []crio.Part
	if err := json.Unmarshal(b, &parts); err != nil {
		return nil, fault.Infraf("environment %s: %s: %w", m.Env.ID, m.Env.Path(stackFile), err)
	}
	return crio.Verify(ctx, m.SSH, crio.Stack{Parts: parts}, crio.ProofDigests)
}
