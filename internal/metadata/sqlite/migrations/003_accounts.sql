-- Users and robot accounts share one namespace of login names.
CREATE TABLE accounts (
    name        TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('user', 'robot')),
    secret      TEXT    NOT NULL,
    groups_json TEXT    NOT NULL DEFAULT '[]',
    description TEXT    NOT NULL DEFAULT '',
    expires     INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL
) WITHOUT ROWID;

-- What a subject (user:NAME, robot:NAME, group:NAME, anonymous) may do on repositories matching a
-- pattern. actions is a sorted, comma-separated list.
CREATE TABLE grants (
    subject TEXT    NOT NULL,
    pattern TEXT    NOT NULL,
    actions TEXT    NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (subject, pattern)
) WITHOUT ROWID;

-- Refresh tokens (docker login's identity tokens), by the SHA-256 of the token.
CREATE TABLE refresh_tokens (
    hash    TEXT    PRIMARY KEY,
    account TEXT    NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    expires INTEGER NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_account ON refresh_tokens (account);

-- Small named values of the registry itself (token signing keys, sealed when a key is configured).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
