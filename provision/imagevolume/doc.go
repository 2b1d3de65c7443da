// Package imagevolume owns the "image-volume-lifecycle" test: upstream
// CRI-O's "OCI image volume mount lifecycle" (test/oci_volumes.bats) driven
// by crictl in the guest over SSH, plus its sub-path, invalid-sub-path and
// image-not-pulled cases. The four cases run side by side when each has a
// volume image of its own (Config.Volumes), one after another otherwise;
// the steps are reported in the same order either way. Every step is
// recorded with its command, status, duration and trimmed output, and a
// failure is explained from the known version incompatibilities.
package imagevolume
