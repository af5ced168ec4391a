package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/auth/oidc"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// AdminPasswordFile is where the first start writes the generated admin password, in the data
// directory, readable by the owner only.
const AdminPasswordFile = "admin-password"

// newAuth builds the authentication service, creating the first admin on a new registry. throttles
// keeps the login throttles' counts when replicas share the store (nil: in memory).
func newAuth(ctx context.Context, cfg config.Config, acc metadata.Accounts, throttles metadata.Throttles, sealer auth.Sealer,
	candidates func(string) []string, audit *slog.Logger, log *slog.Logger) (*auth.Service, error) {
	if err := firstAdmin(ctx, cfg.Data, acc, audit, log); err != nil {
		return nil, err
	}
	proxies, err := cfg.Auth.Proxies()
	if err != nil {
		return nil, err
	}
	opt := auth.Options{
		TrustedProxies: proxies,
		Accounts:       acc, Sealer: sealer, Service: cfg.Auth.Service, Realm: cfg.Auth.Realm,
		TokenTTL: cfg.Auth.TokenTTL, RefreshTTL: cfg.Auth.RefreshTTL, Candidates: candidates, Audit: audit,
		Throttles: throttles,
	}
	if len(cfg.Auth.OIDC) > 0 {
		f, err := oidc.New(cfg.Auth.OIDC, nil)
		if err != nil {
			return nil, err
		}
		opt.Federation = federation{f}
	}
	return auth.New(ctx, opt)
}

// firstAdmin creates the user admin, allowed everything, with a random password written to a file
// only the owner can read, when the registry has no account at all. There is never a default
// password.
func firstAdmin(ctx context.Context, data string, acc metadata.Accounts, audit, log *slog.Logger) error {
	n, err := acc.CountAccounts(ctx)
	if err != nil || n > 0 {
		return err
	}
	password, err := auth.RandomPassword()
	if err != nil {
		return err
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return err
	}
	path := filepath.Join(data, AdminPasswordFile)
	// The file first: an account whose password was never written down would lock everyone out.
	if err := writeSecretFile(path, password+"\n"); err != nil {
		return err
	}
	err = acc.CreateAccount(ctx, &metadata.Account{Name: "admin", Kind: metadata.KindUser, Secret: hash,
		Description: "created on first start"})
	if errors.Is(err, metadata.ErrExists) {
		// Another replica, starting at the same time on the same database, created admin first:
		// the password written here is not admin's.
		return os.Remove(path)
	} else if err != nil {
		return err
	}
	if err := acc.AddGrant(ctx, metadata.Grant{Subject: "user:admin", Pattern: "*", Actions: []string{"admin"}}); err != nil {
		return err
	}
	abs, _ := filepath.Abs(path)
	log.Warn("created the first user, admin, with a random password: change it with `berth user passwd admin`, then delete the file",
		"password_file", abs)
	audit.Info("account created", "account", "admin", "kind", metadata.KindUser, "by", "first start")
	audit.Info("grant added", "subject", "user:admin", "pattern", "*", "actions", "admin", "by", "first start")
	return nil
}

// writeSecretFile writes content to a new file readable only by its owner, replacing any older one.
func writeSecretFile(path, content string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil { // an existing tmp may have had other bits
		f.Close()
		return err
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// federation adapts package oidc to auth.Federation.
type federation struct{ f *oidc.Federation }

func (f federation) Exchange(ctx context.Context, raw string) (*auth.Federated, error) {
	id, err := f.f.Verify(ctx, raw)
	if errors.Is(err, oidc.ErrUnavailable) {
		return nil, fmt.Errorf("%w: %v", auth.ErrUnavailable, err)
	} else if err != nil {
		return nil, err
	}
	out := &auth.Federated{Trust: id.Trust, Subject: id.Subject, Expiry: id.Expiry}
	for _, g := range id.Grants {
		out.Grants = append(out.Grants, metadata.Grant{Pattern: g.Repositories, Actions: g.Actions})
	}
	return out, nil
}

// AuditLogger returns the logger of audit lines: JSON lines appended to cfg.Auth.AuditLog, or
// the main log. close releases the file.
func AuditLogger(cfg config.Config, log *slog.Logger) (l *slog.Logger, close func() error, err error) {
	if cfg.Auth.AuditLog == "" {
		return log.With("log", "audit"), func() error { return nil }, nil
	}
	f, err := os.OpenFile(cfg.Auth.AuditLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	return slog.New(slog.NewJSONHandler(f, nil)), f.Close, nil
}

// adminOf is who may see what an endpoint outside /v2/ shows about the repositories of a
// pattern: callers with admin on all of them (with no authentication, --dev, everyone).
type adminOf func(r *http.Request, pattern string) (bool, error)

// admins returns the check of svc (nil: --dev, everyone is).
func admins(svc *auth.Service) adminOf {
	if svc == nil {
		return func(*http.Request, string) (bool, error) { return true, nil }
	}
	return svc.IsAdmin
}

func writeAuthError(w http.ResponseWriter, err error) {
	e := oci.AsError(err)
	if e == nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.HTTPStatus())
	json.NewEncoder(w).Encode(map[string]any{"errors": []*oci.Error{e}})
}
