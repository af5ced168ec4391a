-- Named, expiring claims: which process does a piece of work that one process of many must do
-- (the upload purge, the pull-through cache's upstream requests; later garbage collection and
-- lifecycle). expires is by the database's clock, which every replica shares.
CREATE TABLE leases (
    name    text COLLATE "C" PRIMARY KEY,
    holder  text NOT NULL,
    expires timestamptz NOT NULL
);
