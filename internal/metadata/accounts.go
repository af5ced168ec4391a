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
	// Settings returns the named values whose keys start with prefix.
	Settings(ctx context.Context, prefix string) (map[string][]byte, error)
	// DeleteSetting removes a named value; ErrNotFound when there is none.
	DeleteSetting(ctx context.Context, key string) error
}

// Notifier is an optional capability of stores that several processes share: short messages on
// named channels, which every process listening on the channel receives once the transaction that
// sent them has committed, in the order they were committed. The store itself sends on AuthChannel
// with every committed change to accounts or grants.
type Notifier interface {
	// Listen delivers every message sent on channels to got, one at a time and in order. It
	// calls ready once it listens (what was sent before is not delivered: the caller catches up
	// then). It returns nil when ctx ends, an error when the messages stop (the connection
	// failed): the caller listens again, and meanwhile polls for what it would have heard.
	Listen(ctx context.Context, channels []string, ready func(), got func(channel, payload string)) error
	// Notify sends payload (at most MaxPayload bytes) on channel.
	Notify(ctx context.Context, channel, payload string) error
}

// AuthChannel is the channel of a Notifier on which the store announces changes to accounts and
// grants (the payload says nothing more).
const AuthChannel = "berth_auth"

// MaxPayload bounds a Notifier's message (PostgreSQL's limit is 8000 bytes).
const MaxPayload = 7999
