package oci

import (
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
	// Register the hash functions go-digest validates and computes with.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Digest is a content digest ("sha256:<hex>"), as go-digest parses it.
type Digest = digest.Digest

// The grammar of the distribution spec, section "Pulling manifests".
var (
	nameComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	nameRE        = regexp.MustCompile(`^` + nameComponent + `(?:/` + nameComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// MaxNameLength bounds a repository name; with a host name it must fit the 255 characters
// that Docker clients accept.
const MaxNameLength = 255

// ValidName reports whether s is a repository name as the spec defines it.
func ValidName(s string) bool {
	return len(s) > 0 && len(s) <= MaxNameLength && nameRE.MatchString(s)
}

// ValidTag reports whether s is a tag as the spec defines it.
func ValidTag(s string) bool { return tagRE.MatchString(s) }

// ParseDigest validates s as a digest whose algorithm berth supports (sha256, sha512) and
// returns it; the error is a DIGEST_INVALID *Error.
func ParseDigest(s string) (Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", Errorf(ErrDigestInvalid, "invalid digest %q: %v", s, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	}
	return "", Errorf(ErrDigestInvalid, "unsupported digest algorithm %q (sha256 and sha512 are)", d.Algorithm())
}

// IsDigest reports whether a manifest reference is a digest rather than a tag.
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }
