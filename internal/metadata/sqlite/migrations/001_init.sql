-- Repositories exist from their first blob link or manifest.
CREATE TABLE repositories (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);

-- Which blobs each repository may see. Blob bytes live in the blob store, keyed by digest.
CREATE TABLE repo_blobs (
    repo_id INTEGER NOT NULL REFERENCES repositories (id),
    digest  TEXT    NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;

-- Manifests are small (at most 4 MiB) and read on every pull: their bytes live here.
CREATE TABLE manifests (
    repo_id       INTEGER NOT NULL REFERENCES repositories (id),
    digest        TEXT    NOT NULL,
    media_type    TEXT    NOT NULL,
    artifact_type TEXT    NOT NULL,
    subject       TEXT,
    annotations   TEXT,
    content       BLOB    NOT NULL,
    created       INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repo_id, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    repo_id INTEGER NOT NULL REFERENCES repositories (id),
    name    TEXT    NOT NULL,
    digest  TEXT    NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE INDEX tags_digest ON tags (repo_id, digest);

-- Upload sessions; their bytes live in the blob store under the same id.
CREATE TABLE uploads (
    id      TEXT PRIMARY KEY,
    repo    TEXT NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
