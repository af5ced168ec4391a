-- Pull tracking (ECR's lastRecordedPullTime): when each manifest was last pulled and how often,
-- written in batches by the registry. A table of its own, so that recording pulls never writes
-- the manifests' rows.
CREATE TABLE manifest_pulls (
    repo_id     INTEGER NOT NULL,
    digest      TEXT    NOT NULL,
    last_pulled INTEGER NOT NULL,
    pulls       INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
