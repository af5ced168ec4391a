-- Login throttles that replicas share (metadata.Throttles). A token bucket is the time at which it
-- is full again; a bucket without a row is full, so rows whose time has passed are pruned. No
-- index on full_at: the rows are few and short-lived (minutes, an hour at most), the prune is a
-- scan once a minute, and updates that touch no index stay on their page (HOT).
CREATE TABLE login_buckets (
    key     text COLLATE "C" PRIMARY KEY,
    full_at timestamptz NOT NULL
);

-- The addresses accounts logged in from (a few per account, for a month): while an account's own
-- budget is spent, they still may try. Account names are those of logins, not of accounts: a
-- name nobody has is never recorded (only successful logins are), and a deleted account's rows
-- age out.
CREATE TABLE login_addresses (
    account text COLLATE "C" NOT NULL,
    addr    text COLLATE "C" NOT NULL,
    seen    timestamptz NOT NULL,
    PRIMARY KEY (account, addr)
);
