-- Every change to accounts or grants also notifies the channel berth_auth, delivered when the
-- transaction commits (and once per transaction, however many rows it changed): replicas that
-- listen reload at once, rather than at their next comparison of the version (which stays, for
-- a replica whose listening connection is down).
CREATE OR REPLACE FUNCTION bump_auth_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_version SET version = version + 1 WHERE id = 1;
    PERFORM pg_notify('berth_auth', '');
    RETURN NULL;
END;
$$;
