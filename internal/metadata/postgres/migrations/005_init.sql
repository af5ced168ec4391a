-- The schema of the SQLite store's migrations 001 to 005, in one: a new PostgreSQL database starts
-- at version 5, so that a later migration takes the same number on both backends.
--
-- Names, tags and digests are COLLATE "C": listings are in byte order, as the API promises,
-- whatever the database's default collation (en_US.UTF-8 and ICU collations sort "_x" and "A"
-- elsewhere). Times are microseconds (timestamptz).

-- Repositories exist from their first blob link or manifest.
CREATE TABLE repositories (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    text COLLATE "C" NOT NULL UNIQUE,
    created timestamptz NOT NULL
);

-- Which blobs each repository may see. Blob bytes live in the blob store, keyed by digest.
CREATE TABLE repo_blobs (
    repo_id bigint NOT NULL REFERENCES repositories (id),
    digest  text COLLATE "C" NOT NULL,
    size    bigint NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
-- Which repositories link a blob (the cache asks whether one of a rule's repositories does).
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);

-- Manifests are small (at most 4 MiB) and read on every pull: their bytes live here. annotations
-- is a JSON object as text: jsonb refuses "\u0000" in a value.
CREATE TABLE manifests (
    repo_id       bigint NOT NULL REFERENCES repositories (id),
    digest        text COLLATE "C" NOT NULL,
    media_type    text NOT NULL,
    artifact_type text NOT NULL,
    subject       text COLLATE "C",
    annotations   text,
    content       bytea NOT NULL,
    created       timestamptz NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repo_id, subject) WHERE subject IS NOT NULL;

-- A tag points at a manifest of its repository, and goes with it. (SQLite's store deletes the tags
-- itself; here the key also holds when a push and a delete of the same manifest meet.)
CREATE TABLE tags (
    repo_id bigint NOT NULL,
    name    text COLLATE "C" NOT NULL,
    digest  text COLLATE "C" NOT NULL,
    updated timestamptz NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_digest ON tags (repo_id, digest);

-- Upload sessions; their bytes live in the blob store under the same id.
CREATE TABLE uploads (
    id      text COLLATE "C" PRIMARY KEY,
    repo    text NOT NULL,
    created timestamptz NOT NULL
);

-- When the pull-through cache last confirmed a cached tag with its upstream.
CREATE TABLE tag_checks (
    repo_id bigint NOT NULL REFERENCES repositories (id),
    tag     text COLLATE "C" NOT NULL,
    checked timestamptz NOT NULL,
    PRIMARY KEY (repo_id, tag)
);

-- The blobs that the pull-through cache's copies of upstream manifests declare, with the declared
-- sizes: a request for one of them is part of an upstream image, not a request by digest only.
CREATE TABLE cache_expected (
    repo_id bigint NOT NULL REFERENCES repositories (id),
    digest  text COLLATE "C" NOT NULL,
    size    bigint NOT NULL,
    PRIMARY KEY (repo_id, digest)
);

-- Users and robot accounts share one namespace of login names. Every account gets an ID of its
-- own, so that what was handed out to an account (tokens) never passes to a later account of the
-- same name. expires is NULL for never.
CREATE TABLE accounts (
    name        text COLLATE "C" PRIMARY KEY,
    id          text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('user', 'robot')),
    secret      text NOT NULL,
    groups      text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    expires     timestamptz,
    created     timestamptz NOT NULL
);

-- What a subject (user:NAME, robot:NAME, group:NAME, anonymous) may do on repositories matching a
-- pattern. actions is sorted (byte order).
CREATE TABLE grants (
    subject text COLLATE "C" NOT NULL,
    pattern text COLLATE "C" NOT NULL,
    actions text[] NOT NULL,
    created timestamptz NOT NULL,
    PRIMARY KEY (subject, pattern)
);

-- Refresh tokens (docker login's identity tokens), by the SHA-256 of the token.
CREATE TABLE refresh_tokens (
    hash    text COLLATE "C" PRIMARY KEY,
    account text COLLATE "C" NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    expires timestamptz NOT NULL,
    created timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_account ON refresh_tokens (account);

-- Small named values of the registry itself (token signing keys, sealed when a key is configured).
CREATE TABLE settings (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
