package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHashPassword(t *testing.T) {
	const pw = "correct horse battery staple ✓"
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	wantPrefix := fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$", argon2.Version, argonMemory, argonTime, argonThreads)
	if !strings.HasPrefix(h, wantPrefix) {
		t.Errorf("hash %q, want prefix %q", h, wantPrefix)
	}
	if strings.Contains(h, pw) {
		t.Errorf("hash %q contains the password", h)
	}
	parts := strings.Split(h, "$")
	if salt, err := base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(salt) != 16 {
		t.Errorf("salt %q: %d bytes, %v; want 16", parts[4], len(salt), err)
	}
	if key, err := base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(key) != argonKeyLen {
		t.Errorf("key %q: %d bytes, %v; want %d", parts[5], len(key), err, argonKeyLen)
	}
	for _, c := range []struct {
		guess string
		ok    bool
	}{
		{pw, true},
		{"correct horse battery staple", false},
		{pw + " ", false},
		{strings.ToUpper(pw), false},
		{"", false},
	} {
		ok, err := verifySecret(h, c.guess)
		if err != nil || ok != c.ok {
			t.Errorf("verifySecret(%q) = %v, %v; want %v", c.guess, ok, err, c.ok)
		}
	}
	// A new salt each time: equal passwords do not give equal hashes.
	h2, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if h2 == h {
		t.Error("two hashes of one password are equal")
	}
	if ok, err := verifySecret(h2, pw); !ok || err != nil {
		t.Errorf("verifySecret(second hash) = %v, %v", ok, err)
	}
}

func TestHashEmptyPassword(t *testing.T) {
	h := cheapHash(t, "")
	if ok, err := verifySecret(h, ""); !ok || err != nil {
		t.Errorf("verifySecret(empty, empty) = %v, %v", ok, err)
	}
	if ok, err := verifySecret(h, "x"); ok || err != nil {
		t.Errorf("verifySecret(empty, x) = %v, %v", ok, err)
	}
}

// Hashes carry their parameters: a hash made with other ones (older defaults) still verifies.
func TestVerifySecretHonoursParameters(t *testing.T) {
	salt := []byte("0123456789abcdef")
	for _, p := range []struct {
		m, t   uint32
		p      uint8
		keyLen uint32
	}{{64, 1, 1, 32}, {128, 3, 2, 16}, {8 * 4, 1, 4, 64}} {
		key := argon2.IDKey([]byte("pw"), salt, p.t, p.m, p.p, p.keyLen)
		h := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.m, p.t, p.p,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
		if ok, err := verifySecret(h, "pw"); !ok || err != nil {
			t.Errorf("verifySecret(%s, pw) = %v, %v", h, ok, err)
		}
		if ok, err := verifySecret(h, "pW"); ok || err != nil {
			t.Errorf("verifySecret(%s, pW) = %v, %v", h, ok, err)
		}
	}
}

func TestVerifySecretMalformed(t *testing.T) {
	good := cheapHash(t, "pw")
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, key
	join := func(p ...string) string { return strings.Join(p, "$") }
	for _, h := range []string{
		"",
		"pw",
		"$2y$10$abcdefghijklmnopqrstuu5K6rVlK1o2sF3V4b0yP0m8wqZcjvZkq", // bcrypt: not ours
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5",                  // argon2i, not argon2id
		"$argon2id$",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ",
		good + "$extra",
		join(parts[0], parts[1], "v=18", parts[3], parts[4], parts[5]),
		join(parts[0], parts[1], "v=x", parts[3], parts[4], parts[5]),
		join(parts[0], parts[1], parts[2], "m=0,t=1,p=1", parts[4], parts[5]),
		join(parts[0], parts[1], parts[2], "m=64,t=0,p=1", parts[4], parts[5]),
		join(parts[0], parts[1], parts[2], "m=64,t=1,p=0", parts[4], parts[5]),
		join(parts[0], parts[1], parts[2], "m=64,t=1,p=300", parts[4], parts[5]),    // p overflows uint8
		join(parts[0], parts[1], parts[2], "m=64,t=65,p=1", parts[4], parts[5]),     // too slow to check
		join(parts[0], parts[1], parts[2], "m=4194304,t=1,p=1", parts[4], parts[5]), // 4 GiB
		join(parts[0], parts[1], parts[2], "m=-1,t=1,p=1", parts[4], parts[5]),
		join(parts[0], parts[1], parts[2], "t=1,m=64,p=1", parts[4], parts[5]),
		join(parts[0], parts[1], parts[2], parts[3], "!!not base64!!", parts[5]),
		join(parts[0], parts[1], parts[2], parts[3], parts[4], "!!not base64!!"),
		join(parts[0], parts[1], parts[2], parts[3], parts[4], ""), // no key: anything would match
		"$sha256", // not "$sha256$"
	} {
		ok, err := verifySecret(h, "pw")
		if ok || !errors.Is(err, errBadHash) {
			t.Errorf("verifySecret(%q) = %v, %v; want errBadHash", h, ok, err)
		}
	}
}

func TestRobotSecret(t *testing.T) {
	secret, hash, err := NewRobotSecret()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, RobotPrefix) {
		t.Errorf("secret %q lacks the prefix %q", secret, RobotPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, RobotPrefix))
	if err != nil || len(raw) != 32 {
		t.Errorf("secret %q: %d random bytes, %v; want 32", secret, len(raw), err)
	}
	sum := sha256.Sum256([]byte(secret))
	if want := "$sha256$" + hex.EncodeToString(sum[:]); hash != want {
		t.Errorf("hash %q, want %q", hash, want)
	}
	if strings.Contains(hash, strings.TrimPrefix(secret, RobotPrefix)) {
		t.Error("the hash contains the secret")
	}
	if ok, err := verifySecret(hash, secret); !ok || err != nil {
		t.Errorf("verifySecret(right secret) = %v, %v", ok, err)
	}
	flipped := []byte(secret)
	flipped[len(flipped)-1] ^= 1
	for _, guess := range []string{"", RobotPrefix, strings.TrimPrefix(secret, RobotPrefix), secret + "x", secret[:len(secret)-1], string(flipped), hash} {
		if ok, err := verifySecret(hash, guess); ok || err != nil {
			t.Errorf("verifySecret(%q) = %v, %v; want false", guess, ok, err)
		}
	}
	// Each secret is new.
	seen := map[string]bool{secret: true}
	for range 20 {
		s, h, err := NewRobotSecret()
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatalf("secret %q repeated", s)
		}
		seen[s] = true
		if ok, _ := verifySecret(h, secret); ok {
			t.Fatal("a robot secret verifies against another robot's hash")
		}
	}
}

func TestRandomPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		p, err := RandomPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 24 || strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			t.Errorf("password %q: want 24 URL-safe characters", p)
		}
		if seen[p] {
			t.Fatalf("password %q repeated", p)
		}
		seen[p] = true
	}
}
