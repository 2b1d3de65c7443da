// Package start owns how a run's guest comes up: restored from a warm
// state (its stack installed and CRI-O running), restored from the
// post-boot state that the cells of one image and VM shape share (its
// artifact disk hot-plugged after), or booted cold from the image. It
// makes the choice, holds the domain names that saved guests restore
// under, reaps what dead runs left under such a name, builds both keys
// from one description of the guest, handles a save that does not
// restore in one place, and saves the states the next runs start from.
// Start returns how the guest came up, with the notes and timings, as a
// value; the pipeline (provision/cellrun) only reports it.
package start
