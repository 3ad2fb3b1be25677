//! The one backoff brook waits with between attempts to reach something
//! outside (a socket source reconnecting, the PostgreSQL sink retrying a
//! batch): 100 ms, doubled after each failed attempt, at most 5 s.

use std::time::Duration;

/// The first wait; doubled after each failed attempt up to [`MAX_WAIT`].
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);

/// How long to wait before the next attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_WAIT }
    }
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_wait(&self) -> Duration {
        self.next
    }

    /// Waits [`Backoff::next_wait`], then doubles it (up to [`MAX_WAIT`]).
    pub async fn wait(&mut self) {
        let wait = self.next;
        self.grow();
        tokio::time::sleep(wait).await;
    }

    fn grow(&mut self) {
        self.next = (self.next * 2).min(MAX_WAIT);
    }

    /// An attempt succeeded: the next failure waits [`FIRST_WAIT`] again.
    pub fn reset(&mut self) {
        self.next = FIRST_WAIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_100_ms_up_to_5_s_and_start_over_after_a_success() {
        let mut backoff = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(backoff.next_wait().as_millis());
            backoff.grow();
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), FIRST_WAIT);
    }
}
