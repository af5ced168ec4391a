-- Named, expiring claims: which process does a piece of work that one process of many must do
-- (the upload purge; later garbage collection and lifecycle). expires is in Unix nanoseconds.
CREATE TABLE leases (
    name    TEXT    NOT NULL PRIMARY KEY,
    holder  TEXT    NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
