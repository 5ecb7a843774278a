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
//! - Claims: an outbox row is delivered by the instance named in `claimed_by` for as long as
//!   that instance is alive (its heartbeat within the lease period): no per-row renewal, so a
//!   backlog of thousands of rows costs the heartbeat nothing. Rows that nobody alive holds
//!   are claimed with `FOR UPDATE SKIP LOCKED`, only the lowest pending revision of an item per
//!   destination (invariant 4), so two instances never send one item's revisions out of order.

use super::write::from_header;
use super::{PgBackend, Rows, pg_err};
use crate::store::{Heartbeat, InstanceInfo, StoreError};

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
    pub(super) async fn beat(&self, sources: &[String]) -> Result<Heartbeat, StoreError> {
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
        // Keep the sources about to be handed over (their tasks stop first, then `release`
        // gives them up); the ones that stay here are renewed with the take below.
        txn.execute(
            "UPDATE pollhook_leases SET expires = now() + $2::bigint * interval '1 millisecond'
             WHERE instance = $1 AND expires > now() AND NOT (source = ANY($3))",
            &[&self.instance, &lease, &mine],
        )
        .await
        .map_err(pg_err)?;
        // Leases another live instance holds are left alone without touching (locking) their
        // rows: it hands them over at its next heartbeat.
        let free: Vec<String> = txn
            .query(
                "SELECT s FROM unnest($2::text[]) s WHERE NOT EXISTS (
                   SELECT 1 FROM pollhook_leases l
                   WHERE l.source = s AND l.instance <> $1 AND l.expires > now())",
                &[&self.instance, &mine],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Renew what is held and take what is free; a take-over raises the epoch. `next_due_ms` is left as the
        // previous holder wrote it, so RETURNING shows when it meant to poll next.
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
                 RETURNING source, epoch, next_due_ms",
                &[&self.instance, &free, &lease],
            )
            .await
            .map_err(pg_err)?;
        txn.commit().await.map_err(pg_err)?;
        let waiting = mine.len().saturating_sub(rows.len());
        let mut held = self
            .held
            .lock()
            .map_err(|_| StoreError::Backend("lease table lock poisoned".into()))?;
        let mut now_held = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let (source, epoch, due): (String, i64, Option<i64>) = (r.get(0), r.get(1), r.get(2));
            let entry = match held.get(&source) {
                // Renewed: the task keeps its schedule.
                Some((old, resume)) if *old == epoch => (epoch, *resume),
                // Taken over: the first poll is when the previous holder would have polled (a
                // clean handover) or at once (its holder died: the source is overdue). A lease
                // taken for the first time (epoch 1) polls on the source's own schedule.
                _ if epoch > 1 => (epoch, Some(due.unwrap_or(0))),
                _ => (epoch, due),
            };
            now_held.insert(source, entry);
        }
        // Leases about to be handed over stay known (their commits are still fenced right).
        for (source, entry) in held.iter() {
            if !now_held.contains_key(source) && !mine.contains(&source.as_str()) {
                now_held.insert(source.clone(), *entry);
            }
        }
        *held = now_held;
        let run = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect();
        Ok(Heartbeat {
            held: run,
            waiting,
            live: live.len().max(1),
        })
    }

    /// Gives up leases (their tasks have stopped), recording each source's next due poll.
    pub(super) async fn release_some(
        &self,
        handover: &[(String, Option<i64>)],
    ) -> Result<(), StoreError> {
        if handover.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = handover.iter().map(|(s, _)| s.as_str()).collect();
        let due: Vec<Option<i64>> = handover.iter().map(|(_, d)| *d).collect();
        let client = self.client().await?;
        client
            .execute(
                "UPDATE pollhook_leases l SET expires = now() - interval '1 millisecond', next_due_ms = h.due
                 FROM unnest($2::text[], $3::bigint[]) AS h(source, due)
                 WHERE l.source = h.source AND l.instance = $1",
                &[&self.instance, &names, &due],
            )
            .await
            .map_err(pg_err)?;
        if let Ok(mut held) = self.held.lock() {
            for name in &names {
                held.remove(*name);
            }
        }
        tracing::info!(sources = names.len(), "source leases handed over");
        Ok(())
    }

    /// Claims up to `limit` due rows no live instance holds, each the lowest pending revision
    /// of its item for its destination (or above rows this instance holds already).
    pub(super) async fn claim_rows(&self, limit: usize, mine: bool) -> Result<Rows, StoreError> {
        let client = self.client().await?;
        let horizon = crate::delivery::now_ms() + 1000;
        let rows = client
            .query(
                "WITH live AS (
                   SELECT name FROM pollhook_instances
                   WHERE heartbeat > now() - $2::bigint * interval '1 millisecond')
                 UPDATE pollhook_outbox o SET claimed_by = $1
                 WHERE o.seq IN (
                   SELECT c.seq FROM pollhook_outbox c
                   WHERE (c.claimed_by IS NULL
                          OR ($5 AND c.claimed_by = $1)
                          OR (c.claimed_by <> $1 AND c.claimed_by NOT IN (SELECT name FROM live)))
                     AND ($5 OR c.due_ms <= $3)
                     AND NOT EXISTS (
                       SELECT 1 FROM pollhook_outbox p
                       WHERE p.destination = c.destination AND p.source = c.source AND p.key = c.key
                         AND (p.revision, p.seq) < (c.revision, c.seq)
                         AND p.claimed_by IS DISTINCT FROM $1)
                   ORDER BY c.seq LIMIT $4
                   FOR UPDATE SKIP LOCKED)
                 RETURNING o.header",
                &[
                    &self.instance,
                    &self.lease_ms(),
                    &horizon,
                    &(limit as i64),
                    &mine,
                ],
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
                          WHERE o.claimed_by = i.name)
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

    pub(super) async fn read_holder(&self, source: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT instance FROM pollhook_leases WHERE source = $1 AND expires > now()",
                &[&source],
            )
            .await
            .map_err(pg_err)?;
        Ok(found.map(|r| r.get(0)))
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
            "UPDATE pollhook_outbox SET claimed_by = NULL WHERE claimed_by = $1",
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
