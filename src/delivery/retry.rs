//! Retry decisions: a typed attempt outcome in, "done / retry at / dead-letter" out. Pure.
//!
//! 2xx is delivered. 408, 429, 5xx, timeouts and connection errors are retried on the
//! destination's schedule, honouring `Retry-After` clamped to [step, 2 × step]. 410 and every
//! other 3xx/4xx dead-letter at once with the reason (redirects are never followed).

use std::time::Duration;

/// What one delivery attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered.
    Status {
        /// HTTP status.
        code: u16,
        /// Parsed `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No answer within the destination's timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connect(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered.
    Done,
    /// Try again at this unix time in ms.
    RetryAt(i64),
    /// Give up, with the reason.
    Dead(String),
}

/// A short description of an outcome, for `last_error` and logs.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Status { code, .. } => format!("HTTP {code}"),
        Outcome::Timeout => "timed out".to_owned(),
        Outcome::Connect(e) => format!("connection failed: {e}"),
    }
}

/// Decides after attempt number `attempt` (1-based) with `schedule` = delays after attempt 1, 2, ….
pub fn decide(attempt: u32, outcome: &Outcome, schedule: &[Duration], now_ms: i64) -> Decision {
    let retry_after = match outcome {
        Outcome::Status {
            code: 200..=299, ..
        } => return Decision::Done,
        Outcome::Status { code: 410, .. } => {
            return Decision::Dead(
                "HTTP 410 Gone: the receiver says this endpoint is gone".to_owned(),
            );
        }
        Outcome::Status { code, retry_after } if *code == 408 || *code == 429 || *code >= 500 => {
            *retry_after
        }
        Outcome::Status { code, .. } => {
            return Decision::Dead(format!("HTTP {code}: not retryable"));
        }
        Outcome::Timeout | Outcome::Connect(_) => None,
    };
    let Some(step) = schedule.get(attempt.saturating_sub(1) as usize) else {
        return Decision::Dead(format!(
            "gave up after {attempt} attempts; last: {}",
            describe(outcome)
        ));
    };
    let delay = retry_after.map_or(*step, |ra| ra.clamp(*step, step.saturating_mul(2)));
    Decision::RetryAt(now_ms.saturating_add(delay.as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(60)];

    fn status(code: u16) -> Outcome {
        Outcome::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn success_and_permanent_failures() {
        assert_eq!(decide(1, &status(204), &S, 0), Decision::Done);
        assert!(matches!(decide(1, &status(410), &S, 0), Decision::Dead(r) if r.contains("410")));
        assert!(matches!(decide(1, &status(400), &S, 0), Decision::Dead(_)));
        assert!(matches!(decide(1, &status(302), &S, 0), Decision::Dead(_)));
    }

    #[test]
    fn transient_failures_follow_the_schedule_then_dead_letter() {
        for o in [
            status(500),
            status(503),
            status(408),
            status(429),
            Outcome::Timeout,
            Outcome::Connect("refused".into()),
        ] {
            assert_eq!(decide(1, &o, &S, 1000), Decision::RetryAt(6000));
            assert_eq!(decide(2, &o, &S, 1000), Decision::RetryAt(61_000));
            assert!(
                matches!(decide(3, &o, &S, 1000), Decision::Dead(r) if r.contains("3 attempts"))
            );
        }
    }

    #[test]
    fn retry_after_is_clamped_to_step_and_twice_it() {
        let ra = |s| Outcome::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(decide(1, &ra(7), &S, 0), Decision::RetryAt(7000));
        assert_eq!(decide(1, &ra(1), &S, 0), Decision::RetryAt(5000));
        assert_eq!(decide(1, &ra(3600), &S, 0), Decision::RetryAt(10_000));
    }
}
