// Package env owns envctl environments on the host: one directory per
// environment under the state directory, holding its record (env.json), its
// SSH keys, its serial console log and its lock. It finds environments whose
// owning envctl process is gone, for gc.
package env
