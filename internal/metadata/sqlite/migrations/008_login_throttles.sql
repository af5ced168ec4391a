-- Login throttles kept in the store (metadata.Throttles; berth uses them when replicas share a
-- PostgreSQL store, and keeps them in memory otherwise). A token bucket is the time at which it is
-- full again, in Unix nanoseconds; a bucket without a row is full, so rows whose time has passed
-- are pruned.
CREATE TABLE login_buckets (
    key     TEXT    NOT NULL PRIMARY KEY,
    full_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The addresses accounts logged in from (a few per account, for a month), seen in Unix nanoseconds.
CREATE TABLE login_addresses (
    account TEXT    NOT NULL,
    addr    TEXT    NOT NULL,
    seen    INTEGER NOT NULL,
    PRIMARY KEY (account, addr)
) WITHOUT ROWID;
