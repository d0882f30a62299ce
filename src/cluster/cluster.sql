-- Several nodes on one PostgreSQL database: what keeps their hot caches coherent
-- (src/cluster/, ARCHITECTURE.md "Several nodes"). Idempotent: applied at every start.

-- The nodes that may use a hot cache, each while its lease runs (on this database's clock),
-- and the last barrier each has acknowledged.
CREATE TABLE IF NOT EXISTS nodes (
    id          TEXT        PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL,
    acked       BIGINT      NOT NULL
);
-- Barriers: a writer takes the next value, announces it after its commit, and returns once
-- every leased node has acknowledged it.
CREATE SEQUENCE IF NOT EXISTS barriers;

-- Every committed change that can make a cached answer wrong announces itself on
-- 'authkeys_invalidate', inside the changing transaction (so no call site can forget it and a
-- crash cannot lose it): 's' and a session's token hash, 'k' and a key's hash, or '*' for
-- everything when a statement changed more than one row. Usage stamps and counters are not
-- announced: no cached answer depends on them being current.
CREATE OR REPLACE FUNCTION authkeys_announce(kind TEXT, hashes BYTEA[]) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(hashes) = 1 THEN
        PERFORM pg_notify('authkeys_invalidate', kind || encode(hashes[1], 'hex'));
    ELSIF cardinality(hashes) > 1 THEN
        PERFORM pg_notify('authkeys_invalidate', '*');
    END IF;
END $$;

CREATE OR REPLACE FUNCTION authkeys_machines_deleted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM authkeys_announce('s', ARRAY(SELECT token_hash FROM old_rows));
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION authkeys_machines_updated() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM authkeys_announce('s', ARRAY(
        SELECT o.token_hash FROM old_rows o JOIN new_rows n ON n.pk = o.pk
         WHERE to_jsonb(o) - 'last_seen_at' IS DISTINCT FROM to_jsonb(n) - 'last_seen_at'));
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION authkeys_keys_updated() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM authkeys_announce('k', ARRAY(
        SELECT o.hash FROM old_rows o JOIN new_rows n ON n.pk = o.pk
         WHERE to_jsonb(o) - 'last_used_at' - 'machine_rows'
               IS DISTINCT FROM to_jsonb(n) - 'last_used_at' - 'machine_rows'));
    RETURN NULL;
END $$;

-- Apps never change but for their deletion, which revokes their keys and deletes their
-- machines in the same transaction (announced above); announced all the same, being rare.
CREATE OR REPLACE FUNCTION authkeys_everything_changed() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('authkeys_invalidate', '*');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS machines_deleted ON machines;
CREATE TRIGGER machines_deleted AFTER DELETE ON machines
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION authkeys_machines_deleted();
DROP TRIGGER IF EXISTS machines_updated ON machines;
CREATE TRIGGER machines_updated AFTER UPDATE ON machines
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION authkeys_machines_updated();
DROP TRIGGER IF EXISTS keys_updated ON keys;
CREATE TRIGGER keys_updated AFTER UPDATE ON keys
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION authkeys_keys_updated();
DROP TRIGGER IF EXISTS keys_deleted ON keys;
CREATE TRIGGER keys_deleted AFTER DELETE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION authkeys_everything_changed();
DROP TRIGGER IF EXISTS apps_changed ON apps;
CREATE TRIGGER apps_changed AFTER UPDATE OR DELETE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION authkeys_everything_changed();
