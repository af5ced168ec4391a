package oci

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The spec's grammar as its regular expressions: ValidName and ValidTag must agree with them.
var (
	nameComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	nameRE        = regexp.MustCompile(`^` + nameComponent + `(?:/` + nameComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

func refName(s string) bool { return len(s) > 0 && len(s) <= MaxNameLength && nameRE.MatchString(s) }

// The hand-written checks agree with the spec's regular expressions on the tables' cases and on
// many random strings over the alphabet where they can differ (separators, case, slashes, a
// colon, a byte above ASCII).
func TestNamesAgreeWithGrammar(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab0Z.._-_--//:\xfc"
	for range 200000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		s := string(b)
		if got, want := ValidName(s), refName(s); got != want {
			t.Errorf("ValidName(%q) = %v, the grammar says %v", s, got, want)
		}
		if got, want := ValidTag(s), tagRE.MatchString(s); got != want {
			t.Errorf("ValidTag(%q) = %v, the grammar says %v", s, got, want)
		}
	}
}

// name255 is a repository name of exactly MaxNameLength characters made of several components.
var name255 = strings.Repeat("abcdefgh/", 28) + "abc"

func TestValidName(t *testing.T) {
	if len(name255) != 255 {
		t.Fatalf("len(name255) = %d", len(name255))
	}
	for _, c := range []struct {
		name string
		want bool
	}{
		{"a", true},
		{"0", true},
		{"ubuntu", true},
		{"library/ubuntu", true},
		{"a/b/c/d/e", true},
		{"a.b", true},
		{"a_b", true},
		{"a__b", true},
		{"a-b", true},
		{"a--b", true},
		{"a----b", true},
		{"a.b_c__d-e--f", true},
		{"a0/1b/c-2.d_e", true},
		{"my-registry.example.com/team/app", true},
		{strings.Repeat("a", 255), true},
		{name255, true},

		{"", false},
		{"A", false},
		{"Library/ubuntu", false},
		{"library/Ubuntu", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"/", false},
		{".a", false},
		{"a.", false},
		{"a..b", false},
		{"a.-b", false},
		{"a._b", false},
		{"a-.b", false},
		{"a___b", false},
		{"a_-b", false},
		{"_a", false},
		{"a_", false},
		{"-a", false},
		{"a-", false},
		{"a/-b", false},
		{"a/.b", false},
		{"a/b_", false},
		{".", false},
		{"..", false},
		{"a/../b", false},
		{"a/./b", false},
		{"a b", false},
		{"a:b", false},
		{"a@b", false},
		{"a\\b", false},
		{"a+b", false},
		{"a\n", false},
		{"\na", false},
		{"a\x00", false},
		{"ü", false},
		{"a/ü", false},
		{strings.Repeat("a", 256), false},
		{name255 + "d", false},
		{"a/" + name255, false},
	} {
		if got := ValidName(c.name); got != c.want {
			t.Errorf("ValidName(%q) = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestValidTag(t *testing.T) {
	for _, c := range []struct {
		tag  string
		want bool
	}{
		{"latest", true},
		{"v1.0.0", true},
		{"1", true},
		{"_", true},
		{"_a", true},
		{"A", true},
		{"LATEST", true},
		{"a-b", true},
		{"a.b", true},
		{"a__b..c--d", true},
		{"v1.0-rc.1_build.5", true},
		{"sha256-" + strings.Repeat("a", 64), true}, // cosign's tags
		{strings.Repeat("a", 128), true},
		{"_" + strings.Repeat(".", 127), true},

		{"", false},
		{".a", false},
		{"-a", false},
		{".", false},
		{"a/b", false},
		{"a:b", false},
		{"sha256:" + strings.Repeat("a", 64), false},
		{"a b", false},
		{"a+b", false},
		{"a@b", false},
		{"a\n", false},
		{"a\x00", false},
		{"ü", false},
		{strings.Repeat("a", 129), false},
	} {
		if got := ValidTag(c.tag); got != c.want {
			t.Errorf("ValidTag(%q) = %v, want %v", c.tag, got, c.want)
		}
	}
}

const (
	hex64  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	hex128 = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

func TestParseDigest(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"sha256:" + hex64, true},
		{"sha512:" + hex128, true},

		{"", false},
		{"sha256", false},
		{"sha256:", false},
		{":" + hex64, false},
		{hex64, false},
		{"sha256:" + hex64[:63], false},             // too short
		{"sha256:" + hex64 + "0", false},            // too long
		{"sha256:" + hex128, false},                 // sha512's length
		{"sha512:" + hex64, false},                  // sha256's length
		{"sha256:" + strings.ToUpper(hex64), false}, // upper case hex
		{"SHA256:" + hex64, false},
		{"sha256:" + hex64[:63] + "g", false}, // not hex
		{"sha256:" + hex64[:63] + " ", false},
		{"sha256:" + hex64 + "\n", false},
		{" sha256:" + hex64, false},
		{"sha256::" + hex64[1:], false},
		{"sha384:" + strings.Repeat("a", 96), false}, // valid, but not supported
		{"md5:d41d8cd98f00b204e9800998ecf8427e", false},
		{"sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709", false},
		{"blake3:" + hex64, false},
		{"sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", false},
		{"sha256:../../../etc/passwd", false},
	} {
		d, err := ParseDigest(c.in)
		if c.ok {
			if err != nil || d.String() != c.in {
				t.Errorf("ParseDigest(%q) = %q, %v; want it back", c.in, d, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseDigest(%q) = %q, want an error", c.in, d)
			continue
		}
		if d != "" {
			t.Errorf("ParseDigest(%q) returned %q with its error", c.in, d)
		}
		if e := AsError(err); e == nil || e.Code != ErrDigestInvalid {
			t.Errorf("ParseDigest(%q) error %v is not DIGEST_INVALID", c.in, err)
		}
	}
}

func TestIsDigest(t *testing.T) {
	for ref, want := range map[string]bool{
		"latest":           false,
		"v1.0":             false,
		"sha256-" + hex64:  false,
		"sha256:" + hex64:  true,
		"sha512:" + hex128: true,
		"sha256:not-hex":   true, // looks like a digest: ParseDigest then refuses it
		"":                 false,
	} {
		if got := IsDigest(ref); got != want {
			t.Errorf("IsDigest(%q) = %v, want %v", ref, got, want)
		}
	}
	// Every valid tag is not a digest, so the two never collide.
	if IsDigest(strings.Repeat("a", 128)) {
		t.Error("a tag is taken for a digest")
	}
}

// validNameByHand is the spec's name grammar written out without regular expressions:
// components [a-z0-9]+ joined by one '.', one or two '_', or any number of '-', separated by '/'.
func validNameByHand(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLength {
		return false
	}
	for _, comp := range strings.Split(s, "/") {
		if comp == "" {
			return false
		}
		alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
		for i := 0; i < len(comp); {
			if alnum(comp[i]) {
				i++
				continue
			}
			// A separator: it must follow and precede alphanumerics.
			if i == 0 {
				return false
			}
			j := i
			for j < len(comp) && !alnum(comp[j]) {
				j++
			}
			if j == len(comp) {
				return false
			}
			switch sep := comp[i:j]; {
			case sep == "." || sep == "_" || sep == "__":
			case strings.Trim(sep, "-") == "":
			default:
				return false
			}
			i = j
		}
	}
	return true
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "library/ubuntu", "a__b", "a---b", "a.b/c_d", "a//b", "A", "a_.b", name255, name255 + "x", "a/", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := ValidName(s)
		if want := validNameByHand(s); got != want {
			t.Fatalf("ValidName(%q) = %v, but the grammar says %v", s, got, want)
		}
		if !got {
			return
		}
		if len(s) > MaxNameLength {
			t.Fatalf("ValidName accepted %d characters", len(s))
		}
		// A valid name is safe in a URL path and a file path: no "..", no empty component, no
		// characters that need escaping.
		if strings.Contains(s, "..") || strings.Contains(s, "//") || strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") {
			t.Fatalf("ValidName accepted %q", s)
		}
		if strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789._-/") != "" {
			t.Fatalf("ValidName accepted %q with other characters", s)
		}
	})
}

func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + hex64, "sha512:" + hex128, "sha384:" + strings.Repeat("a", 96), "md5:00", "", ":", "sha256:" + strings.ToUpper(hex64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != ErrDigestInvalid {
				t.Fatalf("ParseDigest(%q): %v is not DIGEST_INVALID", s, err)
			}
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDigest(%q) = %q", s, d)
		}
		alg, enc, _ := strings.Cut(s, ":")
		want := map[string]int{"sha256": 64, "sha512": 128}[alg]
		if want == 0 || len(enc) != want || strings.Trim(enc, "0123456789abcdef") != "" {
			t.Fatalf("ParseDigest accepted %q", s)
		}
		if !IsDigest(s) || ValidTag(s) {
			t.Fatalf("digest %q is taken for a tag", s)
		}
	})
}
