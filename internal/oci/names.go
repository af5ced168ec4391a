package oci

import (
	"strings"

	"github.com/opencontainers/go-digest"
	// Register the hash functions go-digest validates and computes with.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Digest is a content digest ("sha256:<hex>"), as go-digest parses it.
type Digest = digest.Digest

// The grammar of the distribution spec, section "Pulling manifests", is
//
//	name      = component ("/" component)*                      (at most MaxNameLength bytes)
//	component = [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
//	tag       = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//
// ValidName and ValidTag check it by hand: they run on every request, and the regular
// expressions (kept in the tests as the reference they are checked against) cost a fifth of the
// registry's own work for a manifest pull.

// MaxNameLength bounds a repository name; with a host name it must fit the 255 characters
// that Docker clients accept.
const MaxNameLength = 255

// ValidName reports whether s is a repository name as the spec defines it.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLength {
		return false
	}
	// sep is the separator run since the last alphanumeric byte of the component; start says
	// that no alphanumeric byte has come yet in the component.
	sep, start := "", true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
			if !start && sep != "" && sep != "." && sep != "_" && sep != "__" && strings.Trim(sep, "-") != "" {
				return false
			}
			sep, start = "", false
		case c == '.' || c == '_' || c == '-':
			if start {
				return false
			}
			if sep == "" {
				sep = s[i : i+1]
			} else {
				sep = s[i-len(sep) : i+1]
			}
		case c == '/':
			if start || sep != "" {
				return false
			}
			start = true
		default:
			return false
		}
	}
	return !start && sep == ""
}

// ValidTag reports whether s is a tag as the spec defines it.
func ValidTag(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' ||
			i > 0 && (c == '.' || c == '-')) {
			return false
		}
	}
	return true
}

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
