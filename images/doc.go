// Package images owns base images: the embedded catalog of checksum-pinned
// cloud images, the registry of locally built images (`envctl image build`),
// and resolving an image name to the exact files a VM boots from. The
// content-addressed download cache lives in images/cache and the cloud-init
// seed writer in images/cidata.
package images
