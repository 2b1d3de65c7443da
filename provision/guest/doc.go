// Package guest owns talking to a booted VM over SSH with
// golang.org/x/crypto/ssh: dialing with the host key pinned in advance (no
// trust on first use), waiting for readiness with backoff, running commands
// with streamed output and exit status, batches of commands in one round
// trip (Batch), uploading files over SFTP, and remote port forwards that
// expose a host-side service on the guest's loopback.
package guest
