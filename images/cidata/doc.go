// Package cidata owns the cloud-init NoCloud seed: an ISO 9660 volume
// labelled "cidata" holding user-data and meta-data, written in Go. It also
// generates the per-environment SSH keys: the user's ed25519 key and the
// guest's ed25519 host key, which is injected through cloud-init `ssh_keys`
// so envctl knows the host key before first contact (no trust on first use).
// The same keys are copied under envctl/ for images whose fast envctl-seed
// unit applies them without cloud-init.
package cidata
