//! Fast data generation for the scale scenarios, and the direct-rusqlite login baseline.

use authkeys::Database;
use authkeys::TokenKind;
use authkeys::ops;
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to put in a benchmark database.
pub struct Seed {
    pub keys: u64,
    pub machines: u64,
    /// Make every machine an ephemeral one that has already expired (for the sweep).
    pub expired: bool,
}

pub fn seed_command(args: &[String]) -> Result<(), String> {
    let db = crate::flag(args, "--db").ok_or("--db is required")?;
    let tokens = crate::flag(args, "--tokens").ok_or("--tokens is required")?;
    let seed = Seed {
        keys: crate::number_flag(args, "--keys")?,
        machines: crate::number_flag(args, "--machines")?,
        expired: args.iter().any(|a| a == "--expired"),
    };
    seed_database(Path::new(db), &seed, Path::new(tokens))
}

/// Creates the database with the product's own schema, then inserts `seed` in one
/// transaction; writes every machine's session token to `tokens_out`, one per line.
pub fn seed_database(db: &Path, seed: &Seed, tokens_out: &Path) -> Result<(), String> {
    ops::migrate(&Database::File(db.to_path_buf())).map_err(|err| err.to_string())?;
    let mut conn = Connection::open(db).map_err(|err| err.to_string())?;
    conn.pragma_update(None, "synchronous", "OFF")
        .map_err(|err| err.to_string())?;
    let now = authkeys::Timestamp::now().0;
    let mut out = BufWriter::new(std::fs::File::create(tokens_out).map_err(|e| e.to_string())?);
    let tx = conn.transaction().map_err(|err| err.to_string())?;
    {
        tx.execute(
            "INSERT INTO apps (id, name, created_at) VALUES ('bench', 'Bench', ?1)",
            [now],
        )
        .map_err(|err| err.to_string())?;
        let app_pk = tx.last_insert_rowid();
        let mut insert_key = tx
            .prepare(
                "INSERT INTO keys (id, app_pk, hash, hint, reusable, ephemeral, created_at)
                 VALUES (?1, ?2, ?3, 'ena_bench…', 1, ?4, ?5)",
            )
            .map_err(|err| err.to_string())?;
        for n in 0..seed.keys.max(1) {
            let key = ops::generate_token(TokenKind::AuthKey);
            insert_key
                .execute(params![
                    format!("key_bench{n}"),
                    app_pk,
                    key.hash().as_bytes(),
                    seed.expired,
                    now
                ])
                .map_err(|err| err.to_string())?;
        }
        let mut insert_machine = tx
            .prepare(
                "INSERT INTO machines (id, key_pk, app_pk, key_id, token_hash, name, ephemeral,
                                       created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8)",
            )
            .map_err(|err| err.to_string())?;
        let expires_at = seed.expired.then_some(now - 1000);
        for n in 0..seed.machines {
            let session = ops::generate_token(TokenKind::Session);
            let key_n = n % seed.keys.max(1);
            insert_machine
                .execute(params![
                    format!("mch_bench{n}"),
                    key_n as i64 + 1,
                    app_pk,
                    format!("key_bench{key_n}"),
                    session.hash().as_bytes(),
                    seed.expired,
                    now,
                    expires_at
                ])
                .map_err(|err| err.to_string())?;
            writeln!(out, "{}", session.expose()).map_err(|err| err.to_string())?;
        }
        // What the product's writes keep in step with the machines (`keys.machine_rows`).
        tx.execute(
            "UPDATE keys SET machine_rows = (SELECT count(*) FROM machines m WHERE m.key_pk = keys.pk)",
            [],
        )
        .map_err(|err| err.to_string())?;
    }
    tx.commit().map_err(|err| err.to_string())?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .map_err(|err| err.to_string())?;
    // Written without syncs, so the seeded pages (and the tokens) are still on their way to
    // the disk: a scenario that starts meanwhile would share the disk with its own setup
    // (measured: 270 MB of dirty pages for the first 15 s of the sweep scenario).
    let tokens = out.into_inner().map_err(|err| err.to_string())?;
    std::fs::File::open(db)
        .and_then(|file| file.sync_all())
        .and_then(|()| tokens.sync_all())
        .map_err(|err| err.to_string())
}

pub fn insert_loop_command(args: &[String]) -> Result<(), String> {
    let db = crate::flag(args, "--db").ok_or("--db is required")?;
    let seconds = crate::number_flag(args, "--seconds")?;
    let rate = insert_loop(Path::new(db), Duration::from_secs(seconds))?;
    println!("{}", serde_json::json!({"commits_per_sec": rate}));
    Ok(())
}

/// What a login writes, done directly through rusqlite in a loop with the server's
/// durability (WAL, `synchronous=FULL`): one key update and one machine insert per commit.
/// Returns commits per second.
pub fn insert_loop(db: &Path, duration: Duration) -> Result<f64, String> {
    let conn = Connection::open(db).map_err(|err| err.to_string())?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|err| err.to_string())?;
    let (key_pk, app_pk, key_id): (i64, i64, String) = conn
        .query_row(
            "SELECT pk, app_pk, id FROM keys ORDER BY pk LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(|err| err.to_string())?;
    // Ids and hashes stay unique across calls on the same database (one per round).
    static INSERTED: AtomicU64 = AtomicU64::new(0);
    let run = format!("{}_{}", std::process::id(), authkeys::Timestamp::now().0);
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed() < duration {
        let now = authkeys::Timestamp::now().0;
        let n = INSERTED.fetch_add(1, Ordering::Relaxed);
        let hash: [u8; 32] = Sha256::digest(format!("loop-{run}-{n}")).into();
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|err| err.to_string())?;
        conn.prepare_cached(
            "UPDATE keys SET uses = uses + 1, last_used_at = ?2, machine_rows = machine_rows + 1
              WHERE pk = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![key_pk, now]))
        .map_err(|err| err.to_string())?;
        conn.prepare_cached(
            "INSERT INTO machines (id, key_pk, app_pk, key_id, token_hash, name, ephemeral,
                                   created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, 0, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                format!("mch_loop{run}_{n}"),
                key_pk,
                app_pk,
                key_id,
                &hash[..],
                now
            ])
        })
        .map_err(|err| err.to_string())?;
        conn.execute_batch("COMMIT")
            .map_err(|err| err.to_string())?;
        commits += 1;
    }
    Ok(commits as f64 / started.elapsed().as_secs_f64())
}
