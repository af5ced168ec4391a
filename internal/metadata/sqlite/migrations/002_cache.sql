-- When the pull-through cache last confirmed a cached tag with its upstream.
CREATE TABLE tag_checks (
    repo_id INTEGER NOT NULL REFERENCES repositories (id),
    tag     TEXT    NOT NULL,
    checked INTEGER NOT NULL,
    PRIMARY KEY (repo_id, tag)
) WITHOUT ROWID;
