// Package warm owns warm starts: saved running guests with the locked
// stack installed and verified and CRI-O up, kept in the user's cache and
// keyed by everything that determines them (the cell's lock entry, the VM
// shape, the hypervisor and accelerator, the test images and envctl's
// guest-setup version). A run with the same key restores one instead of
// booting and installing; a changed key, a missing or damaged state or a
// failed restore means the cold path, never a wrong environment.
package warm
