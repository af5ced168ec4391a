package metadata

import (
	"context"
	"errors"
	"time"
)

// ErrExists reports that something to be created exists already.
var ErrExists = errors.New("already exists")

// Account kinds.
const (
	KindUser  = "user"
	KindRobot = "robot"
)

// Account is a user (a person with a password) or a robot account (a long random secret for CI
// and runtimes). Users and robots share one namespace of login names.
type Account struct {
	// ID is unique among all accounts there ever were: a new account that takes a deleted
	// account's name gets a new ID (set by CreateAccount).
	ID          string
	Name        string
	Kind        string
	Secret      string // the encoded hash of the password or robot secret, never the secret
	Groups      []string
	Description string
	Expires     time.Time // zero: never
	Created     time.Time
}

// Grant lets a subject do actions on the repositories a pattern matches. Subjects are
// "user:NAME", "robot:NAME", "group:NAME" and "anonymous".
type Grant struct {
	Subject string
	Pattern string
	Actions []string // sorted
	Created time.Time
}

// Accounts is the part of the metadata store that holds identities, grants and the registry's own
// secrets. Every method is one transaction.
type Accounts interface {
	// CreateAccount stores a new account; ErrExists if the name is taken.
	CreateAccount(ctx context.Context, a *Account) error
	// Account returns the account name; ErrNotFound.
	Account(ctx context.Context, name string) (*Account, error)
	// ListAccounts lists the accounts of kind ("" for all) by name.
	ListAccounts(ctx context.Context, kind string) ([]Account, error)
	// UpdateAccount replaces the secret, groups, description and expiry of an account;
	// ErrNotFound. Changing the secret drops the account's refresh tokens.
	UpdateAccount(ctx context.Context, a *Account) error
	// DeleteAccount deletes an account with its grants and refresh tokens; ErrNotFound.
	DeleteAccount(ctx context.Context, name string) error
	// CountAccounts returns how many accounts there are.
	CountAccounts(ctx context.Context) (int, error)

	// AddGrant adds g's actions to what g.Subject may do on g.Pattern.
	AddGrant(ctx context.Context, g Grant) error
	// RevokeGrant removes actions (all when none are given) from subject on pattern; ErrNotFound
	// if the subject had no grant on that pattern.
	RevokeGrant(ctx context.Context, subject, pattern string, actions ...string) error
	// Grants lists every grant by subject and pattern.
	Grants(ctx context.Context) ([]Grant, error)
	// AuthVersion returns a number that changes with every change to accounts or grants, made
	// by any process sharing the store, so that a running berth reloads them only then.
	AuthVersion(ctx context.Context) (int64, error)

	// CreateRefreshToken records a refresh token (by its hash) of an account.
	CreateRefreshToken(ctx context.Context, hash, account string, expires time.Time) error
	// RefreshToken returns the account a refresh token belongs to; ErrNotFound when unknown or
	// expired.
	RefreshToken(ctx context.Context, hash string) (account string, err error)

	// Setting returns a named value; ErrNotFound.
	Setting(ctx context.Context, key string) ([]byte, error)
	// SetSetting stores a named value.
	SetSetting(ctx context.Context, key string, value []byte) error
	// CreateSetting stores a named value unless it exists (ErrExists), so that two processes
	// creating it at once keep one.
	CreateSetting(ctx context.Context, key string, value []byte) error
}

// AuthNotifier is an optional capability of stores that several processes share: ListenAuth
// calls changed soon after every committed change to accounts or grants, by any process, and
// once when it starts listening (for what changed before). It returns when ctx ends (nil) or the
// notifications stop (an error): the caller listens again, and compares AuthVersion meanwhile.
type AuthNotifier interface {
	ListenAuth(ctx context.Context, changed func()) error
}
