-- A counter that every change to accounts or grants bumps, committed with the change, whichever
-- process makes it (berth serve, the account commands): a running berth compares it now and then
-- and reloads accounts and grants only when it moved.
CREATE TABLE auth_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO auth_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_auth_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

-- Deferred to the commit: a transaction takes the counter's row last and holds it only while it
-- commits, so that two changes to accounts and grants never wait for each other in a circle (a
-- delete of an account holding the counter while it deletes a grant that a grant being added
-- holds, which waits for the counter).
CREATE CONSTRAINT TRIGGER accounts_auth_version AFTER INSERT OR UPDATE OR DELETE ON accounts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_auth_version();
CREATE CONSTRAINT TRIGGER grants_auth_version AFTER INSERT OR UPDATE OR DELETE ON grants
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_auth_version();
