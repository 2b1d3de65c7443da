// Package base holds no code: its subpackages are envctl's layer-neutral
// foundations, used by every layer (profiles, images, provision, cmd) and
// importing nothing of envctl: fault (the classes of errors and their
// exit codes) and atomicfile (files written whole or not at all). They
// live under the lowest layer's directory because the repository's top
// level is fixed; nothing in them knows about profiles.
package base
