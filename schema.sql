-- authkeys schema, version 4. Applied by src/store/mod.rs inside one transaction when
-- PRAGMA user_version is 0 (the version is then set to 4), and re-run by the upgrades from
-- versions 1, 2 and 3, which is why every statement says IF NOT EXISTS. Times are Unix
-- milliseconds (UTC); durations (`session_ttl`, `idle_timeout`) are seconds. Every start
-- re-applies this file to a version 4 database (all IF NOT EXISTS), so an index added here
-- reaches existing files without a version change. Columns added after a table first shipped
-- come last, in the order the upgrades add them, so an upgraded file has the same columns in
-- the same order as a new one.
-- Public ids (apps.id, keys.id, machines.id) are what the API shows; `pk` leaves the
-- process only inside opaque list cursors (src/page.rs).

-- Server-wide values, such as the hash of the generated admin token.
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

-- Deleted apps stay as tombstones so their revoked keys keep a valid reference; the id can
-- be reused by a new app, which gets a new pk.
CREATE TABLE IF NOT EXISTS apps (
    pk         INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS apps_live_id ON apps (id) WHERE deleted_at IS NULL;

-- Only the SHA-256 of a key is stored. Revoked keys stay (revoked_at set) so that verify can
-- answer "revoked" rather than "not_found".
-- `machine_rows` counts this key's rows in machines, kept by every write that adds or deletes
-- one (in its transaction), so that listing a key's active machines never counts its rows.
-- It came after version 2 shipped: src/store/mod.rs adds it to version 2 files without it.
CREATE TABLE IF NOT EXISTS keys (
    pk           INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    app_pk       INTEGER NOT NULL REFERENCES apps (pk),
    hash         BLOB    NOT NULL UNIQUE,
    hint         TEXT    NOT NULL,
    description  TEXT,
    reusable     INTEGER NOT NULL CHECK (reusable IN (0, 1)),
    ephemeral    INTEGER NOT NULL CHECK (ephemeral IN (0, 1)),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    uses         INTEGER NOT NULL DEFAULT 0,
    machine_rows INTEGER NOT NULL DEFAULT 0,
    -- Version 3: the key's policy. `tags` is a sorted JSON array of distinct tags, `metadata`
    -- a JSON object (at most 1 KiB), both copied into each machine at login. `max_uses` is
    -- NULL when unlimited (1 for a single-use key). `rotated_from`/`rotated_to` are key ids.
    tags         TEXT    NOT NULL DEFAULT '[]',
    metadata     TEXT    NOT NULL DEFAULT '{}',
    max_uses     INTEGER,
    session_ttl  INTEGER,
    idle_timeout INTEGER,
    rotated_from TEXT,
    rotated_to   TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS keys_by_app ON keys (app_pk, created_at);

-- A row per active (or expired but not yet swept) machine session. Logging out, revoking the
-- key or deleting the app deletes the row, in the transaction that revokes or deletes, so a
-- row here always belongs to an unrevoked key of a live app. `app_pk` and `key_id` copy the key's
-- (they never change) so that a session lookup reads this row and the small apps table only,
-- not a random row of keys.
CREATE TABLE IF NOT EXISTS machines (
    pk           INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    key_pk       INTEGER NOT NULL REFERENCES keys (pk),
    app_pk       INTEGER NOT NULL REFERENCES apps (pk),
    key_id       TEXT    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    name         TEXT,
    ephemeral    INTEGER NOT NULL CHECK (ephemeral IN (0, 1)),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_seen_at INTEGER,
    -- Version 3: copied from the key at login (`tags`, `metadata`, `idle_timeout` in seconds);
    -- `trust_policy_id` names the trust policy of an OIDC login, NULL for a key login.
    tags            TEXT    NOT NULL DEFAULT '[]',
    metadata        TEXT    NOT NULL DEFAULT '{}',
    trust_policy_id TEXT,
    idle_timeout    INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS machines_by_key ON machines (key_pk);
-- An app's machines newest first, a page at a time (the row number is the index's tail).
CREATE INDEX IF NOT EXISTS machines_by_app ON machines (app_pk);
CREATE INDEX IF NOT EXISTS machines_by_expiry ON machines (expires_at) WHERE expires_at IS NOT NULL;
-- Machines by the moment they become idle (their last stored activity plus their key's idle
-- timeout), so the sweeper finds idle machines with one range, whatever the number of rows.
CREATE INDEX IF NOT EXISTS machines_by_idle_deadline
    ON machines (coalesce(last_seen_at, created_at) + idle_timeout * 1000)
    WHERE idle_timeout IS NOT NULL;

-- Version 4: scoped admin tokens, the audit log and webhooks.

-- Scoped admin tokens, created by root. Only the SHA-256 of a token is stored; revoked ones
-- stay (revoked_at set). `scopes`, `apps` and `allowed_tags` are JSON arrays (`apps` NULL:
-- every app; `allowed_tags` NULL: any tags).
CREATE TABLE IF NOT EXISTS admin_tokens (
    pk               INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    hash             BLOB    NOT NULL UNIQUE,
    hint             TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    scopes           TEXT    NOT NULL,
    apps             TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    last_used_at     INTEGER,
    revoked_at       INTEGER,
    max_key_lifetime INTEGER,
    allowed_tags     TEXT,
    ephemeral_only   INTEGER NOT NULL CHECK (ephemeral_only IN (0, 1))
) STRICT;

-- One row per change, written in the change's own transaction. AUTOINCREMENT: `seq` must
-- never be reused, even once retention has deleted the newest rows, because webhooks and
-- `GET /v1/audit?after=` resume from a seq. `details` is a JSON object.
CREATE TABLE IF NOT EXISTS audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    actor_type  TEXT    NOT NULL,
    actor_id    TEXT,
    app         TEXT,
    target_type TEXT    NOT NULL,
    target_id   TEXT    NOT NULL,
    client_addr TEXT,
    details     TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_by_app ON audit_events (app, seq);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit_events (action, seq);

-- Webhooks. The secret is stored as it is, because the server signs with it (SECURITY.md: the
-- database file is 0600). `events` is a JSON array of actions or `prefix.*` patterns.
-- `after_seq`: every matching event up to it is done (delivered, or given up after 24 hours),
-- so the delivery thread resumes from it after a restart.
CREATE TABLE IF NOT EXISTS webhooks (
    pk          INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    url         TEXT    NOT NULL,
    events      TEXT    NOT NULL,
    description TEXT,
    secret      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    after_seq   INTEGER NOT NULL
) STRICT;

-- One row per (webhook, event) attempted: what the deliveries view shows.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_pk      INTEGER NOT NULL REFERENCES webhooks (pk) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    next_attempt_at INTEGER,
    PRIMARY KEY (webhook_pk, seq)
) STRICT;

-- Keys by expiry, for the sweeper's `key.expiring` (a range of the next seven days).
CREATE INDEX IF NOT EXISTS keys_by_expiry ON keys (expires_at)
    WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
