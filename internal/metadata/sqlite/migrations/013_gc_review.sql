-- Online garbage collection's review queue (the GitLab container registry's model): a blob is
-- queued when something may have stopped needing it or it was just stored (reserved, linked,
-- unlinked, released by a deleted manifest), with the time of that event; the collector looks at
-- those queued longer than its grace period, and decides under the write lock whether nothing
-- references the blob any more. Every blob starts queued, so the first pass looks at all of them.
CREATE TABLE gc_blob_review (
    digest TEXT    PRIMARY KEY,
    since  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX gc_blob_review_since ON gc_blob_review (since);
INSERT INTO gc_blob_review (digest, since) SELECT digest, touched FROM blobs;

-- A cached manifest's declared blobs keep them: the collector asks by digest.
CREATE INDEX cache_expected_digest ON cache_expected (digest);
