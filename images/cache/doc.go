// Package cache owns envctl's content-addressed download cache: blobs are
// stored under their digest, downloads go through grab with resume and a
// progress bar, a blob enters the cache only after its digest is verified
// (by an atomic rename), and file locks keep parallel envctl runs from
// corrupting each other's work.
package cache
