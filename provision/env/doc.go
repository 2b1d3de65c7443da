// Package env owns envctl environments on the host: a state directory with
// one directory per environment, holding its record (env.json), its SSH
// key, its serial console log and its lock; the one table of the libvirt
// volume names an environment owns; and the environment states.
package env
