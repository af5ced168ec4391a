-- Every blob the registry stores, once, whichever repositories link it; and what each pushed
-- manifest references. The database enforces the references, so that a garbage collector can
-- decide from these rows alone, online, what no one uses.
--
-- touched is when a writer last reserved the blob (before it stored the bytes) or linked it
-- (nanoseconds): a collector leaves a blob alone for a grace period after it. size is NULL while
-- the blob is reserved and not yet linked anywhere.
CREATE TABLE blobs (
    digest  TEXT    PRIMARY KEY,
    size    INTEGER,
    touched INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO blobs (digest, size, touched)
SELECT digest, MAX(size), CAST(unixepoch() AS INTEGER) * 1000000000 FROM repo_blobs GROUP BY digest;

-- A repository links only blobs that are recorded. (SQLite adds a foreign key by rebuilding the
-- table.)
CREATE TABLE repo_blobs_new (
    repo_id INTEGER NOT NULL REFERENCES repositories (id),
    digest  TEXT    NOT NULL REFERENCES blobs (digest),
    size    INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
INSERT INTO repo_blobs_new (repo_id, digest, size) SELECT repo_id, digest, size FROM repo_blobs;
DROP TABLE repo_blobs;
ALTER TABLE repo_blobs_new RENAME TO repo_blobs;
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);

-- The blobs (config, layers) of each manifest pushed to a repository: a recorded blob is not
-- deleted while a manifest references it. They go with the manifest. The pull-through cache's
-- copies of upstream manifests reference blobs before they are stored: what they declare is
-- cache_expected instead.
CREATE TABLE manifest_blobs (
    repo_id  INTEGER NOT NULL,
    manifest TEXT    NOT NULL,
    digest   TEXT    NOT NULL REFERENCES blobs (digest),
    PRIMARY KEY (repo_id, manifest, digest),
    FOREIGN KEY (repo_id, manifest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_blobs_digest ON manifest_blobs (digest);

-- The manifests an index pushed to a repository lists: a child cannot be deleted while an index
-- lists it. They go with the index.
CREATE TABLE manifest_children (
    repo_id INTEGER NOT NULL,
    parent  TEXT    NOT NULL,
    child   TEXT    NOT NULL,
    PRIMARY KEY (repo_id, parent, child),
    FOREIGN KEY (repo_id, parent) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE,
    FOREIGN KEY (repo_id, child) REFERENCES manifests (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifest_children_child ON manifest_children (repo_id, child);

-- The references of manifests stored before these tables, read from their content, where what
-- they reference is there (a pushed manifest's always is). Repositories of the pull-through cache
-- (those with cache_expected rows) keep none, as from now on.
INSERT OR IGNORE INTO manifest_blobs (repo_id, manifest, digest)
WITH pushed AS (
    SELECT repo_id, digest, CAST(content AS TEXT) AS doc FROM manifests m
    WHERE json_valid(CAST(content AS TEXT))
      AND NOT EXISTS (SELECT 1 FROM cache_expected c WHERE c.repo_id = m.repo_id)
)
SELECT repo_id, manifest, digest FROM (
    SELECT repo_id, digest AS manifest, json_extract(doc, '$.config.digest') AS digest
    FROM pushed WHERE json_type(doc, '$.config') = 'object'
    UNION ALL
    SELECT p.repo_id, p.digest, json_extract(l.value, '$.digest')
    FROM pushed p, json_each(p.doc, '$.layers') l WHERE json_type(p.doc, '$.layers') = 'array' AND l.type = 'object'
    UNION ALL
    SELECT p.repo_id, p.digest, json_extract(l.value, '$.digest')
    FROM pushed p, json_each(p.doc, '$.blobs') l WHERE json_type(p.doc, '$.blobs') = 'array' AND l.type = 'object'
) r
WHERE digest IS NOT NULL
  AND EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = r.repo_id AND b.digest = r.digest);
INSERT OR IGNORE INTO manifest_children (repo_id, parent, child)
WITH pushed AS (
    SELECT repo_id, digest, CAST(content AS TEXT) AS doc FROM manifests m
    WHERE json_valid(CAST(content AS TEXT))
      AND NOT EXISTS (SELECT 1 FROM cache_expected c WHERE c.repo_id = m.repo_id)
)
SELECT p.repo_id, p.digest, json_extract(l.value, '$.digest')
FROM pushed p, json_each(p.doc, '$.manifests') l
WHERE json_type(p.doc, '$.manifests') = 'array' AND l.type = 'object'
  AND EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = p.repo_id AND c.digest = json_extract(l.value, '$.digest'));
