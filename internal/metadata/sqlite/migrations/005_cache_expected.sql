-- The blobs that the pull-through cache's copies of upstream manifests declare, with the declared
-- sizes: a request for one of them is part of an upstream image, not a request by digest only.
CREATE TABLE cache_expected (
    repo_id INTEGER NOT NULL REFERENCES repositories (id),
    digest  TEXT    NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;

-- Which repositories link a blob (the cache asks whether one of a rule's repositories does).
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);
