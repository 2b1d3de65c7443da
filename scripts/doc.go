// Package scripts owns the shell scripts envctl runs on the host, such as the
// local image builder (build-debian-image.sh) and the files it installs into
// the guest image. They are embedded so the envctl binary works from any
// directory.
package scripts
