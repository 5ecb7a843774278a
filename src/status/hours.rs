//! Fixed-size hourly counters over the last 24 hours, for the status page's 24 h figures and
//! charts (design §6a): a source's poll outcomes and events, a destination's attempts, latency
//! and backlog. Memory only (a restart starts them empty, and the page says since when they
//! count); bounded per source whatever the poll rate: 24 buckets of 16 bytes.
//!
//! Pure: every function takes the time.

/// How many hours are kept.
pub const HOURS: usize = 24;
const HOUR_MS: i64 = 3_600_000;

/// 24 hourly buckets, the newest one being the current hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours<T> {
    /// The hour (since the epoch) of the newest bucket.
    newest: i64,
    buckets: [T; HOURS],
}

impl<T: Copy + Default> Default for Hours<T> {
    fn default() -> Self {
        Hours {
            newest: 0,
            buckets: [T::default(); HOURS],
        }
    }
}

impl<T: Copy + Default> Hours<T> {
    /// Applies `f` to the bucket of the hour `now_ms` falls in; buckets of hours passed since
    /// the newest are cleared first. A time older than the window is not recorded.
    pub fn record(&mut self, now_ms: i64, f: impl FnOnce(&mut T)) {
        let hour = now_ms.div_euclid(HOUR_MS);
        if hour > self.newest {
            let passed = (hour - self.newest).min(HOURS as i64);
            for h in 0..passed {
                self.buckets[slot(hour - h)] = T::default();
            }
            self.newest = hour;
        }
        if hour > self.newest - HOURS as i64 {
            f(&mut self.buckets[slot(hour)]);
        }
    }

    /// The buckets of the 24 hours up to the one `now_ms` falls in, oldest first (hours with
    /// nothing recorded, or older than what was kept, are empty).
    pub fn last_day(&self, now_ms: i64) -> [T; HOURS] {
        let hour = now_ms.div_euclid(HOUR_MS);
        let mut out = [T::default(); HOURS];
        for (i, bucket) in out.iter_mut().enumerate() {
            let h = hour - (HOURS - 1 - i) as i64;
            if h <= self.newest && h > self.newest - HOURS as i64 {
                *bucket = self.buckets[slot(h)];
            }
        }
        out
    }
}

fn slot(hour: i64) -> usize {
    hour.rem_euclid(HOURS as i64) as usize
}

/// One hour of a source: polls by outcome (in `outcome::ALL` order; at most 36,000 polls an
/// hour fit, the fastest schedule being 100 ms) and events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceHour {
    /// Polls by outcome.
    pub polls: [u16; 5],
    /// Events queued.
    pub events: u32,
}

/// Upper bounds (ms) of the latency bins of [`DestHour`]; the last bin takes the rest.
pub const LATENCY_BINS_MS: [u64; 11] = [2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10_000];

/// One hour of a destination: attempts that succeeded and failed, their latencies in bins, and
/// the largest backlog seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestHour {
    /// Attempts answered 2xx.
    pub ok: u32,
    /// Attempts that failed (any other answer, a timeout, a connection error).
    pub failed: u32,
    /// Attempts by latency, in [`LATENCY_BINS_MS`] bins and one more for anything slower.
    pub latency: [u32; LATENCY_BINS_MS.len() + 1],
    /// The largest number of pending rows seen.
    pub backlog: u32,
}

impl DestHour {
    /// Counts one attempt.
    pub fn attempt(&mut self, ok: bool, duration_ms: u64) {
        match ok {
            true => self.ok = self.ok.saturating_add(1),
            false => self.failed = self.failed.saturating_add(1),
        }
        let bin = LATENCY_BINS_MS
            .iter()
            .position(|b| duration_ms <= *b)
            .unwrap_or(LATENCY_BINS_MS.len());
        self.latency[bin] = self.latency[bin].saturating_add(1);
    }

    /// The upper bound of the bin holding quantile `q` (0–1) of the latencies, ms; `None` when
    /// no attempt was made. The last bin reads as "over 10 s" (`u64::MAX`).
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        quantile(&self.latency, q)
    }
}

/// [`DestHour::latency_quantile`] over binned counts.
pub fn quantile(bins: &[u32], q: f64) -> Option<u64> {
    let total: u64 = bins.iter().map(|n| u64::from(*n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in bins.iter().enumerate() {
        seen += u64::from(*n);
        if seen >= rank {
            return Some(LATENCY_BINS_MS.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;

    #[test]
    fn buckets_roll_with_the_hours_and_forget_the_old_ones() {
        let mut h: Hours<u32> = Hours::default();
        let t0 = 1_000 * H + 5;
        h.record(t0, |b| *b += 1);
        h.record(t0 + 10, |b| *b += 1);
        h.record(t0 + H, |b| *b += 5);
        let day = h.last_day(t0 + H);
        assert_eq!(day[HOURS - 1], 5);
        assert_eq!(day[HOURS - 2], 2);
        assert_eq!(day.iter().sum::<u32>(), 7);
        // 23 hours later the first hour is the oldest still shown; a day later it is gone.
        assert_eq!(h.last_day(t0 + 23 * H)[0], 2);
        assert_eq!(h.last_day(t0 + 24 * H).iter().sum::<u32>(), 5);
        h.record(t0 + 30 * H, |b| *b += 1);
        assert_eq!(
            h.last_day(t0 + 30 * H).iter().sum::<u32>(),
            1,
            "stale buckets cleared"
        );
        h.record(t0, |b| *b += 100);
        assert_eq!(
            h.last_day(t0 + 30 * H).iter().sum::<u32>(),
            1,
            "too old to record"
        );
    }

    #[test]
    fn latency_quantiles_read_from_bins() {
        let mut d = DestHour::default();
        for ms in [1, 1, 3, 3, 3, 40, 40, 40, 40, 9_000] {
            d.attempt(true, ms);
        }
        d.attempt(false, 60_000);
        assert_eq!((d.ok, d.failed), (10, 1));
        assert_eq!(d.latency_quantile(0.5), Some(50));
        assert_eq!(d.latency_quantile(0.1), Some(2));
        assert_eq!(d.latency_quantile(0.99), Some(u64::MAX));
        assert_eq!(DestHour::default().latency_quantile(0.5), None);
        assert_eq!(std::mem::size_of::<Hours<SourceHour>>(), 8 + 24 * 16);
    }
}
