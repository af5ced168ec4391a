package auth

import (
	"bytes"
	"strings"
	"testing"
)

// TestSessionKey: one key for every service on a store; stored in the clear without an encryption
// key, sealed with one (and sealed when one is configured later), unreadable with another.
func TestSessionKey(t *testing.T) {
	st := openStore(t)
	a, b := newService(t, Options{Accounts: st}), newService(t, Options{Accounts: st})
	ka, err := a.SessionKey(bg)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.SessionKey(bg)
	if err != nil || !bytes.Equal(ka, kb) || len(ka) != 32 {
		t.Fatalf("two services on one store: %x and %x (%v)", ka, kb, err)
	}
	sealer := newSealer(t)
	sealed := newService(t, Options{Accounts: st, Sealer: sealer})
	if k, err := sealed.SessionKey(bg); err != nil || !bytes.Equal(k, ka) {
		t.Fatalf("with a sealer: %x, %v; want the same key", k, err)
	}
	raw, _ := st.Setting(bg, sessionKeySetting)
	if !strings.HasPrefix(string(raw), "sealed:") || bytes.Contains(raw, ka) {
		t.Errorf("after an encryption key was configured the session key is stored as %q", raw)
	}
	// (A service does not start with another key or none: the token signing keys are sealed too.)
	if _, _, err := openSessionKey(raw, newSealer(t)); err == nil {
		t.Error("another encryption key opened the session key")
	}
	if _, _, err := openSessionKey(raw, nil); err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("no encryption key: %v, want an error that says the key is sealed", err)
	}
}
