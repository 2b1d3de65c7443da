// Package guesttest ships an in-process SSH "guest" for tests: a real
// x/crypto/ssh server on 127.0.0.1 with a pinned host key, public-key
// authentication, SFTP into a private temporary root, remote port
// forwards, and a scriptable fake shell that answers commands by pattern.
// The guest, crio, imagevolume, vm and pipeline tests run envctl's real
// SSH client code against it.
package guesttest
