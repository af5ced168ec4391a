-- Every change to a repository's manifests or tags notifies the channel berth_memory with the
-- repository's name ('d <name>'), delivered when the transaction commits (identical ones once per
-- transaction): replicas that keep manifests in memory drop that repository's, whichever process
-- wrote. A writer then waits until every replica has read as far (internal/metadata/hot).
CREATE FUNCTION notify_manifests_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    repo bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        repo := OLD.repo_id;
    ELSE
        repo := NEW.repo_id;
    END IF;
    PERFORM pg_notify('berth_memory', 'd ' || name) FROM repositories WHERE id = repo;
    RETURN NULL;
END;
$$;

-- Only the columns GetManifest returns: a later column that changes on every pull (a pull time)
-- must not drop every replica's memory each time.
CREATE TRIGGER manifests_notify
    AFTER INSERT OR DELETE OR UPDATE OF repo_id, digest, media_type, artifact_type, subject, annotations, content, created
    ON manifests FOR EACH ROW EXECUTE FUNCTION notify_manifests_changed();
CREATE TRIGGER tags_notify AFTER INSERT OR DELETE OR UPDATE OF repo_id, name, digest ON tags
    FOR EACH ROW EXECUTE FUNCTION notify_manifests_changed();
