-- Every blob the registry stores, once, whichever repositories link it; and what each pushed
-- manifest references. The database enforces the references, so that a garbage collector can
-- decide from these rows alone, online, what no one uses. (The same schema as SQLite's 009.)
--
-- touched is when a writer last reserved the blob (before it stored the bytes) or linked it: a
-- collector leaves a blob alone for a grace period after it. size is NULL while the blob is
-- reserved and not yet linked anywhere.
CREATE TABLE blobs (
    digest  text COLLATE "C" PRIMARY KEY,
    size    bigint,
    touched timestamptz NOT NULL
);
INSERT INTO blobs (digest, size, touched)
SELECT digest, max(size), now() FROM repo_blobs GROUP BY digest;

-- A repository links only blobs that are recorded.
ALTER TABLE repo_blobs ADD FOREIGN KEY (digest) REFERENCES blobs (digest);

-- The blobs (config, layers) of each manifest pushed to a repository: a recorded blob is not
-- deleted while a manifest references it. They go with the manifest. The pull-through cache's
-- copies of upstream manifests reference blobs before they are stored: what they declare is
-- cache_expected instead.
CREATE TABLE manifest_blobs (
    repo_id  bigint NOT NULL,
    manifest text COLLATE "C" NOT NULL,
    digest   text COLLATE "C" NOT NULL REFERENCES blobs (digest),
    PRIMARY KEY (repo_id, manifest, digest),
    FOREIGN KEY (repo_id, manifest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_blobs_digest ON manifest_blobs (digest);

-- The manifests an index pushed to a repository lists: a child cannot be deleted while an index
-- lists it. They go with the index.
CREATE TABLE manifest_children (
    repo_id bigint NOT NULL,
    parent  text COLLATE "C" NOT NULL,
    child   text COLLATE "C" NOT NULL,
    PRIMARY KEY (repo_id, parent, child),
    FOREIGN KEY (repo_id, parent) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE,
    FOREIGN KEY (repo_id, child) REFERENCES manifests (repo_id, digest)
);
CREATE INDEX manifest_children_child ON manifest_children (repo_id, child);

-- The references of manifests stored before these tables, read from their content, where what
-- they reference is there (a pushed manifest's always is). Repositories of the pull-through cache
-- (those with cache_expected rows) keep none, as from now on. json, not jsonb: jsonb refuses
-- "\u0000" in a string.
CREATE TEMP TABLE pushed ON COMMIT DROP AS
SELECT repo_id, digest, convert_from(content, 'UTF8')::json AS doc FROM manifests m
WHERE NOT EXISTS (SELECT 1 FROM cache_expected c WHERE c.repo_id = m.repo_id);
INSERT INTO manifest_blobs (repo_id, manifest, digest)
SELECT DISTINCT r.repo_id, r.manifest, r.digest FROM (
    SELECT repo_id, digest AS manifest, doc->'config'->>'digest' AS digest
    FROM pushed WHERE json_typeof(doc->'config') = 'object'
    UNION ALL
    SELECT p.repo_id, p.digest, l->>'digest'
    FROM pushed p, json_array_elements(CASE WHEN json_typeof(p.doc->'layers') = 'array' THEN p.doc->'layers' ELSE '[]' END) l
    WHERE json_typeof(l) = 'object'
    UNION ALL
    SELECT p.repo_id, p.digest, l->>'digest'
    FROM pushed p, json_array_elements(CASE WHEN json_typeof(p.doc->'blobs') = 'array' THEN p.doc->'blobs' ELSE '[]' END) l
    WHERE json_typeof(l) = 'object'
) r
WHERE r.digest IS NOT NULL
  AND EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = r.repo_id AND b.digest = r.digest);
INSERT INTO manifest_children (repo_id, parent, child)
SELECT DISTINCT p.repo_id, p.digest, l->>'digest'
FROM pushed p, json_array_elements(CASE WHEN json_typeof(p.doc->'manifests') = 'array' THEN p.doc->'manifests' ELSE '[]' END) l
WHERE json_typeof(l) = 'object'
  AND EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = p.repo_id AND c.digest = l->>'digest');
