package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for passwords: OWASP's recommendation for argon2id (19 MiB, 2 passes, 1
// lane). A guess costs an attacker ~20 ms of a core and 19 MiB; berth caches a verified password
// for a few seconds so that clients sending Basic on every request do not pay it each time.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
)

// RobotPrefix starts every robot secret, so that secret scanners can recognise a leaked one.
const RobotPrefix = "berth_rbt_"

// HashPassword returns the argon2id hash of a password in the PHC string format.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// NewRobotSecret returns a new robot secret and the hash to store. A robot secret carries 256
// random bits, so a fast hash is as strong as a slow one and keeps robot logins cheap.
func NewRobotSecret() (secret, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	secret = RobotPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, hashRobotSecret(secret), nil
}

// robotSecretLen is the length of a robot secret: the prefix and 32 bytes in unpadded base64url.
var robotSecretLen = len(RobotPrefix) + base64.RawURLEncoding.EncodedLen(32)

// IsRobotSecret reports whether s has the shape of a robot secret. Logins check such secrets
// with SHA-256 and everything else with argon2id, whatever the account is, so that the time a
// check takes depends on what the caller sent, not on the account; and user passwords of this
// shape are refused (ValidPassword), so that no user needs the fast check.
func IsRobotSecret(s string) bool {
	if len(s) != robotSecretLen || !strings.HasPrefix(s, RobotPrefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s[len(RobotPrefix):])
	return err == nil
}

// ValidPassword checks a new user password: not empty, not longer than 1024 bytes, and not
// starting with the robot secret prefix.
func ValidPassword(p string) error {
	switch {
	case p == "":
		return errors.New("the password is empty")
	case len(p) > 1024:
		return errors.New("the password is longer than 1024 bytes")
	case strings.HasPrefix(p, RobotPrefix):
		return fmt.Errorf("a password must not start with %q, which marks robot secrets", RobotPrefix)
	}
	return nil
}

func hashRobotSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "$sha256$" + hex.EncodeToString(sum[:])
}

// RandomPassword returns a password of 24 random URL-safe characters (144 bits).
func RandomPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

var errBadHash = errors.New("stored secret hash is malformed")

// verifySecret checks secret against a hash made by HashPassword or NewRobotSecret, in time that
// does not depend on where they differ.
func verifySecret(hash, secret string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$sha256$"):
		want := hashRobotSecret(secret)
		return subtle.ConstantTimeCompare([]byte(hash), []byte(want)) == 1, nil
	case strings.HasPrefix(hash, "$argon2id$"):
		parts := strings.Split(hash, "$")
		if len(parts) != 6 {
			return false, errBadHash
		}
		var v int
		var m, t uint32
		var p uint8
		if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
			return false, errBadHash
		}
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<21 || t > 64 {
			return false, errBadHash
		}
		salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
		key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
		if err1 != nil || err2 != nil || len(key) == 0 {
			return false, errBadHash
		}
		got := argon2.IDKey([]byte(secret), salt, t, m, p, uint32(len(key)))
		return subtle.ConstantTimeCompare(got, key) == 1, nil
	}
	return false, errBadHash
}
