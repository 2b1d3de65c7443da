// Package images owns base images on this machine: the registry of locally
// built images (`envctl image build`), resolving an image name to a pinned
// image (a local build, else the catalog's download), and making the exact
// files a VM boots from present. The image catalog itself is knowledge and
// lives in profiles/catalog; the content-addressed store is images/cache and
// the cloud-init seed writer is images/cidata.
package images
