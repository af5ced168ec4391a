-- Every account gets an ID of its own, so that what was handed out to an account (tokens) never
-- passes to a later account of the same name.
ALTER TABLE accounts ADD COLUMN id TEXT NOT NULL DEFAULT '';
UPDATE accounts SET id = lower(hex(randomblob(16))) WHERE id = '';
