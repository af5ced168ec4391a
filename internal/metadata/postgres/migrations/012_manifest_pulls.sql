-- Pull tracking (ECR's lastRecordedPullTime): when each manifest was last pulled and how often,
-- written in batches by the registry. A table of its own, so that recording pulls never writes
-- the manifests' rows (whose changes notify every replica: migration 011).
CREATE TABLE manifest_pulls (
    repo_id     bigint NOT NULL,
    digest      text COLLATE "C" NOT NULL,
    last_pulled timestamptz NOT NULL,
    pulls       bigint NOT NULL,
    PRIMARY KEY (repo_id, digest),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);
