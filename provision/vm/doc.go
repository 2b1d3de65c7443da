// Package vm owns the life of one envctl VM: booting it from a pinned
// image with a fresh cloud-init seed, waiting for SSH with the host key
// pinned in advance, keeping it, attaching to it later, tearing it down
// (domain, recorded volumes, directory), and collecting what dead runs
// left behind (gc, decided by a pure function of what it observes).
//
// It reaches libvirt only through the narrow Driver interface defined
// here; provision/libvirt implements it with go-libvirt, and vmtest ships
// an in-memory fake that boots an in-process SSH "guest".
package vm
