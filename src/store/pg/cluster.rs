//! Sharing one PostgreSQL store between instances (design §8): heartbeats, source leases with
//! fencing epochs, and outbox claims.
//!
//! Design notes:
//! - Ownership is rendezvous hashing over the live instances (heartbeat within the lease
//!   period): every instance computes the same owner for a source without talking to the
//!   others, and when one joins or leaves only the sources that hash to it move.
//! - A lease is a row (source, instance, epoch, expires). Renewal keeps the epoch; a take-over
//!   (from an expired holder, or re-taking after a lapse) raises it, so a poll whose state was
//!   loaded under an older epoch can never commit (`write.rs`, `fences`).
//! - A source that should move is released by its holder at its next heartbeat and taken by
//!   the new owner at the new owner's next heartbeat; a dead holder's lease simply expires.
//! - Claims: an outbox row is delivered by the instance named in `claimed_by` until
//!   `claim_until`, renewed by every heartbeat. Free rows are claimed with `FOR UPDATE SKIP
//!   LOCKED`, only the lowest pending revision of an item per destination (invariant 4), so two
//!   instances never send one item's revisions out of order.

use super::write::from_header;
use super::{PgBackend, Rows, pg_err};
use crate::store::{InstanceInfo, StoreError};

/// Instances whose heartbeat is older than this are forgotten.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The rendezvous weight of `instance` for `source`: the highest weight owns it.
pub fn weight(source: &str, instance: &str) -> u64 {
    let mut bytes = Vec::with_capacity(source.len() + instance.len() + 1);
    bytes.extend_from_slice(source.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(instance.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// The live instance that owns `source`.
pub fn owner<'a>(source: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|i| (weight(source, i), i.as_str()))
        .map(String::as_str)
}

impl PgBackend {
    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// One heartbeat (see the module notes); returns the sources held now.
    pub(super) async fn beat(&self, sources: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_err)?;
        let lease = self.lease_ms();
        txn.execute(
            "INSERT INTO pollhook_instances (name, started_ms, heartbeat) VALUES ($1, $2, now())
             ON CONFLICT (name) DO UPDATE SET heartbeat = now(), started_ms = EXCLUDED.started_ms",
            &[&self.instance, &self.started_ms],
        )
        .await
        .map_err(pg_err)?;
        txn.execute(
            "DELETE FROM pollhook_instances WHERE heartbeat < now() - $1::bigint * interval '1 millisecond'",
            &[&FORGET_AFTER_MS],
        )
        .await
        .map_err(pg_err)?;
        let live: Vec<String> = txn
            .query(
                "SELECT name FROM pollhook_instances
                 WHERE heartbeat > now() - $1::bigint * interval '1 millisecond' ORDER BY name",
                &[&lease],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mine: Vec<&str> = sources
            .iter()
            .filter(|s| owner(s, &live) == Some(self.instance.as_str()))
            .map(String::as_str)
            .collect();
        // Give up what belongs to someone else now (or is no longer configured).
        txn.execute(
            "UPDATE pollhook_leases SET expires = now() - interval '1 millisecond'
             WHERE instance = $1 AND expires > now() AND NOT (source = ANY($2))",
            &[&self.instance, &mine],
        )
        .await
        .map_err(pg_err)?;
        // Renew what is held, take what is free; a take-over raises the epoch.
        let rows = txn
            .query(
                "INSERT INTO pollhook_leases (source, instance, epoch, expires)
                 SELECT s, $1, 1, now() + $3::bigint * interval '1 millisecond' FROM unnest($2::text[]) s
                 ON CONFLICT (source) DO UPDATE SET
                   instance = EXCLUDED.instance,
                   epoch = CASE WHEN pollhook_leases.instance = EXCLUDED.instance
                                     AND pollhook_leases.expires > now()
                                THEN pollhook_leases.epoch ELSE pollhook_leases.epoch + 1 END,
                   expires = EXCLUDED.expires
                 WHERE pollhook_leases.instance = EXCLUDED.instance OR pollhook_leases.expires <= now()
                 RETURNING source, epoch",
                &[&self.instance, &mine, &lease],
            )
            .await
            .map_err(pg_err)?;
        txn.execute(
            "UPDATE pollhook_outbox SET claim_until = now() + $2::bigint * interval '1 millisecond'
             WHERE claimed_by = $1",
            &[&self.instance, &lease],
        )
        .await
        .map_err(pg_err)?;
        txn.commit().await.map_err(pg_err)?;
        let held: std::collections::HashMap<String, i64> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let names = held.iter().map(|(s, e)| (s.clone(), *e as u64)).collect();
        if let Ok(mut h) = self.held.lock() {
            *h = held;
        }
        Ok(names)
    }

    /// Claims up to `limit` due rows no live instance holds, each the lowest pending revision
    /// of its item for its destination (or above rows this instance holds already).
    pub(super) async fn claim_rows(&self, limit: usize, mine: bool) -> Result<Rows, StoreError> {
        let client = self.client().await?;
        let horizon = crate::delivery::now_ms() + 1000;
        let rows = client
            .query(
                "UPDATE pollhook_outbox o
                 SET claimed_by = $1, claim_until = now() + $2::bigint * interval '1 millisecond'
                 WHERE o.seq IN (
                   SELECT c.seq FROM pollhook_outbox c
                   WHERE (c.claimed_by IS NULL OR c.claim_until < now() OR ($5 AND c.claimed_by = $1))
                     AND ($5 OR c.due_ms <= $3)
                     AND NOT EXISTS (
                       SELECT 1 FROM pollhook_outbox p
                       WHERE p.destination = c.destination AND p.source = c.source AND p.key = c.key
                         AND (p.revision, p.seq) < (c.revision, c.seq)
                         AND (p.claimed_by IS DISTINCT FROM $1 OR p.claim_until < now()))
                   ORDER BY c.seq LIMIT $4
                   FOR UPDATE SKIP LOCKED)
                 RETURNING o.header",
                &[&self.instance, &self.lease_ms(), &horizon, &(limit as i64), &mine],
            )
            .await
            .map_err(pg_err)?;
        let mut out: Rows = rows
            .iter()
            .map(|r| from_header(r.get(0), None))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    pub(super) async fn read_instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT i.name, i.started_ms,
                        (extract(epoch FROM i.heartbeat) * 1000)::bigint,
                        i.heartbeat > now() - $1::bigint * interval '1 millisecond',
                        (SELECT count(*) FROM pollhook_leases l
                          WHERE l.instance = i.name AND l.expires > now()),
                        (SELECT count(*) FROM pollhook_outbox o
                          WHERE o.claimed_by = i.name AND o.claim_until > now())
                 FROM pollhook_instances i ORDER BY i.name",
                &[&self.lease_ms()],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| InstanceInfo {
                name: r.get(0),
                started_ms: r.get(1),
                heartbeat_ms: r.get(2),
                alive: r.get(3),
                leases: r.get::<_, i64>(4) as usize,
                claims: r.get::<_, i64>(5) as usize,
            })
            .collect())
    }

    /// A clean stop: leases expire now, claims are freed, the instance leaves the list.
    pub(super) async fn release_all(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_err)?;
        txn.execute(
            "UPDATE pollhook_leases SET expires = now() - interval '1 millisecond'
             WHERE instance = $1 AND expires > now()",
            &[&self.instance],
        )
        .await
        .map_err(pg_err)?;
        txn.execute(
            "UPDATE pollhook_outbox SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = $1",
            &[&self.instance],
        )
        .await
        .map_err(pg_err)?;
        txn.execute(
            "DELETE FROM pollhook_instances WHERE name = $1",
            &[&self.instance],
        )
        .await
        .map_err(pg_err)?;
        txn.commit().await.map_err(pg_err)?;
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
        Ok(())
    }
}
