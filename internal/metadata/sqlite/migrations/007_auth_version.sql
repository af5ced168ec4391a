-- A counter that every change to accounts or grants bumps, in the same transaction, whichever
-- process makes it (berth serve, the account commands): a running berth compares it now and then
-- and reloads accounts and grants only when it moved.
CREATE TABLE auth_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO auth_version (id, version) VALUES (1, 0);
CREATE TRIGGER accounts_insert AFTER INSERT ON accounts BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER accounts_update AFTER UPDATE ON accounts BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER accounts_delete AFTER DELETE ON accounts BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER grants_insert AFTER INSERT ON grants BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER grants_update AFTER UPDATE ON grants BEGIN UPDATE auth_version SET version = version + 1; END;
CREATE TRIGGER grants_delete AFTER DELETE ON grants BEGIN UPDATE auth_version SET version = version + 1; END;
