package guest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Outputter runs a command and returns its combined output (*Client).
type Outputter interface {
	Output(ctx context.Context, cmd string) (string, error)
}

// Result is one command's combined output and exit status in a batch.
type Result struct {
	Output string
	Exit   int
}

// Batch runs commands in one SSH session, one round trip instead of one
// per command: each in a subshell of its own with no input, its combined
// output and exit status framed by markers that carry a random nonce, so
// that no command's output can pass for a frame. A command may not span
// lines. An error is the session's own (the guest stopped answering, ctx
// ended), never a command's exit status.
func Batch(ctx context.Context, g Outputter, cmds []string) ([]Result, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	nonce := "envctl-" + hex.EncodeToString(b[:])
	script, err := BatchScript(nonce, cmds)
	if err != nil {
		return nil, err
	}
	out, err := g.Output(ctx, script)
	var exit *ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, err
	}
	return ParseBatch(nonce, out, len(cmds))
}

// BatchScript is the shell script Batch runs.
func BatchScript(nonce string, cmds []string) (string, error) {
	var s strings.Builder
	for i, c := range cmds {
		if strings.ContainsAny(c, "\n\r") {
			return "", fmt.Errorf("batch: command %d spans lines: %q", i, c)
		}
		fmt.Fprintf(&s, "printf '\\n%s %d\\n'; ( %s\n) </dev/null 2>&1; printf '\\n%s %d end %%d\\n' $?\n", nonce, i, c, nonce, i)
	}
	return s.String(), nil
}

// batchLine matches one command of a BatchScript: its nonce, its index,
// the command.
var batchLine = regexp.MustCompile(`^printf '\\n(envctl-[0-9a-f]+) (\d+)\\n'; \( (.*)$`)

// SplitBatchScript recovers the nonce and the commands of a BatchScript
// (for fakes that answer commands one by one).
func SplitBatchScript(script string) (nonce string, cmds []string, ok bool) {
	lines := strings.Split(strings.TrimSuffix(script, "\n"), "\n")
	if len(lines) == 0 || len(lines)%2 != 0 {
		return "", nil, false
	}
	for i := 0; i < len(lines); i += 2 {
		m := batchLine.FindStringSubmatch(lines[i])
		if m == nil || m[2] != strconv.Itoa(i/2) || (nonce != "" && m[1] != nonce) || !strings.HasPrefix(lines[i+1], ") </dev/null 2>&1; printf ") {
			return "", nil, false
		}
		nonce = m[1]
		cmds = append(cmds, m[3])
	}
	return nonce, cmds, true
}

// FrameResult is one command's output as a BatchScript prints it.
func FrameResult(nonce string, i int, r Result) string {
	return fmt.Sprintf("\n%s %d\n%s\n%s %d end %d\n", nonce, i, r.Output, nonce, i, r.Exit)
}

// ParseBatch splits a BatchScript's output into n results. A command
// whose frame is missing or torn (the session ended in the middle) is an
// error.
func ParseBatch(nonce, out string, n int) ([]Result, error) {
	res := make([]Result, n)
	rest := out
	for i := range n {
		head := fmt.Sprintf("\n%s %d\n", nonce, i)
		j := strings.Index(rest, head)
		if j < 0 {
			return nil, fmt.Errorf("batch: no output of command %d", i)
		}
		rest = rest[j+len(head):]
		tail := fmt.Sprintf("\n%s %d end ", nonce, i)
		k := strings.Index(rest, tail)
		if k < 0 {
			return nil, fmt.Errorf("batch: the output of command %d ends early", i)
		}
		res[i].Output = rest[:k]
		rest = rest[k+len(tail):]
		status, after, _ := strings.Cut(rest, "\n")
		code, err := strconv.Atoi(status)
		if err != nil {
			return nil, fmt.Errorf("batch: command %d: exit status %q", i, status)
		}
		res[i].Exit, rest = code, "\n"+after
	}
	return res, nil
}
