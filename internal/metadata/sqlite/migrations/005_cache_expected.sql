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

-- Manifests stored before this table existed: what they declare, read from their content (image
-- manifests' config and layers). Only the pull-through cache reads the table, so rows for other
-- repositories are harmless.
INSERT OR IGNORE INTO cache_expected (repo_id, digest, size)
SELECT m.repo_id, json_extract(d.value, '$.digest'), json_extract(d.value, '$.size')
FROM manifests m, json_each(CAST(m.content AS TEXT), '$.layers') d
WHERE json_valid(CAST(m.content AS TEXT))
  AND json_type(d.value, '$.digest') = 'text' AND json_type(d.value, '$.size') = 'integer';
INSERT OR IGNORE INTO cache_expected (repo_id, digest, size)
SELECT m.repo_id, json_extract(CAST(m.content AS TEXT), '$.config.digest'), json_extract(CAST(m.content AS TEXT), '$.config.size')
FROM manifests m
WHERE json_valid(CAST(m.content AS TEXT))
  AND json_type(CAST(m.content AS TEXT), '$.config.digest') = 'text'
  AND json_type(CAST(m.content AS TEXT), '$.config.size') = 'integer';
