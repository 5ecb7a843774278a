//! The PostgreSQL schema and its versioned migrations, applied under an advisory lock so that
//! several instances starting together migrate once (design §8).
//!
//! Design notes: every table is prefixed `pollhook_` so the store can share a database. Rows keep
//! the same encodings as redb where a value is opaque to SQL (item state: `codec::encode_item`;
//! outbox headers and delivery records: JSON), and columns for everything a query filters or
//! orders on (lanes, due times, claims, leases).

use tokio_postgres::Client;

use super::pg_err;
use crate::store::StoreError;

/// Key of the advisory lock held while migrating (any constant unique to pollhook).
const MIGRATION_LOCK: i64 = 0x706f_6c6c_686f_6f6b; // "pollhook"

/// Migrations in order; the schema version is the number applied. Never edit a released one:
/// add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE pollhook_sources (
        name text PRIMARY KEY,
        meta bytea,
        floor bigint NOT NULL DEFAULT 0,
        removed_ms bigint
    );
    CREATE TABLE pollhook_items (
        source text NOT NULL,
        key text NOT NULL,
        state bytea NOT NULL,
        data bytea,
        PRIMARY KEY (source, key)
    );
    CREATE SEQUENCE pollhook_seq;
    CREATE TABLE pollhook_outbox (
        seq bigint PRIMARY KEY,
        destination text NOT NULL,
        source text NOT NULL,
        key text NOT NULL,
        revision bigint NOT NULL,
        due_ms bigint NOT NULL,
        header bytea NOT NULL,
        body bytea NOT NULL,
        claimed_by text
    );
    CREATE INDEX pollhook_outbox_lane ON pollhook_outbox (destination, source, key, revision, seq);
    CREATE INDEX pollhook_outbox_claims ON pollhook_outbox (claimed_by);
    CREATE TABLE pollhook_dead (
        seq bigint PRIMARY KEY,
        dead_ms bigint NOT NULL,
        header bytea NOT NULL,
        body bytea NOT NULL
    );
    CREATE TABLE pollhook_history (
        seq bigint PRIMARY KEY,
        event_id text NOT NULL,
        source text NOT NULL,
        destination text NOT NULL,
        status text NOT NULL,
        created_ms bigint NOT NULL,
        resend_of bigint,
        record bytea NOT NULL,
        body bytea
    );
    CREATE INDEX pollhook_history_event ON pollhook_history (event_id, seq);
    CREATE TABLE pollhook_instances (
        name text PRIMARY KEY,
        started_ms bigint NOT NULL,
        heartbeat timestamptz NOT NULL
    );
    CREATE TABLE pollhook_leases (
        source text PRIMARY KEY,
        instance text NOT NULL,
        epoch bigint NOT NULL,
        expires timestamptz NOT NULL,
        next_due_ms bigint
    );
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Creates or migrates the schema: under a transaction-scoped advisory lock, applies every
/// migration above the recorded version, each recorded with the instance that applied it.
pub(super) async fn migrate(client: &mut Client, instance: &str) -> Result<(), StoreError> {
    let txn = client.transaction().await.map_err(pg_err)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS pollhook_migrations (
            version bigint PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now(),
            applied_by text NOT NULL
        )",
    )
    .await
    .map_err(pg_err)?;
    let row = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pollhook_migrations",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let found: i64 = row.get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: found as u64,
            supported: SCHEMA_VERSION as u64,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        txn.batch_execute(sql).await.map_err(pg_err)?;
        txn.execute(
            "INSERT INTO pollhook_migrations (version, applied_by) VALUES ($1, $2)",
            &[&version, &instance],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(version, "state store schema migrated");
    }
    txn.commit().await.map_err(pg_err)
}
