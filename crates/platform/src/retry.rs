//! The one retry helper: an operation that fails for a transient reason (Kafka or MongoDB away) is tried again
//! with a doubling, capped backoff until it succeeds or the service stops, so a consumer holds its message rather
//! than dropping it, and every service waits out an outage the same way.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long to wait between two tries: `initial`, doubling up to `max`; with jitter, each wait is longer by a
/// random part of up to half of it, so that many workers failing together do not all try again together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: bool,
}

impl Backoff {
    /// 100 ms doubling to 5 s: what the consumers wait between two tries while a dependency is away.
    pub const TRANSIENT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            jitter: false,
        }
    }

    /// The same backoff with jitter.
    pub const fn jittered(self) -> Self {
        Self {
            jitter: true,
            ..self
        }
    }

    /// The waits of one operation's tries, for a loop that needs more than [`until_done`] (one that counts its
    /// failures, or gives up after a number of permanent ones).
    pub fn start(self) -> Retrying {
        Retrying {
            backoff: self,
            wait: self.initial,
        }
    }
}

/// Where one operation is in its [`Backoff`].
#[derive(Debug, Clone)]
pub struct Retrying {
    backoff: Backoff,
    wait: Duration,
}

impl Retrying {
    /// The next wait (its jitter drawn now); the one after it is twice as long, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.wait;
        self.wait = (wait * 2).min(self.backoff.max);
        if self.backoff.jitter {
            let half_ms = u64::try_from(wait.as_millis() / 2).unwrap_or(u64::MAX);
            wait + Duration::from_millis(rand::random_range(0..=half_ms))
        } else {
            wait
        }
    }

    /// Sleeps the next wait; false when `shutdown` came first (the caller gives up, the work stays undone).
    pub async fn pause(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = self.next_wait();
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

/// Runs `op` until it succeeds or `shutdown` fires, waiting `backoff` between tries and logging each failure as
/// a warning naming `what`. `None` means shutdown came first: the caller must not count the work as done.
pub async fn until_done<T, E, F, Fut>(
    what: &str,
    backoff: Backoff,
    shutdown: &CancellationToken,
    mut op: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut retrying = backoff.start();
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; trying again");
                if !retrying.pause(shutdown).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn tries_again_with_a_capped_doubling_backoff_until_it_succeeds() {
        let tries = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(30));
        let done = until_done(
            "the test op",
            backoff,
            &CancellationToken::new(),
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0..=3 => Err("away"),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(done, Some(4));
        // 10 + 20 + 30 + 30 ms of waiting, at least.
        assert!(started.elapsed() >= Duration::from_millis(90));
        let mut retrying = backoff.start();
        let waits: Vec<u128> = (0..4).map(|_| retrying.next_wait().as_millis()).collect();
        assert_eq!(waits, [10, 20, 30, 30]);
    }

    #[test]
    fn jitter_lengthens_a_wait_by_at_most_half() {
        let mut retrying = Backoff::new(Duration::from_millis(100), Duration::from_millis(150))
            .jittered()
            .start();
        let first = retrying.next_wait();
        assert!((100..=150).contains(&first.as_millis()), "{first:?}");
        let second = retrying.next_wait();
        assert!((150..=225).contains(&second.as_millis()), "{second:?}");
    }

    #[tokio::test]
    async fn shutdown_ends_the_waiting() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let done: Option<()> = tokio::time::timeout(
            Duration::from_secs(5),
            until_done("never", Backoff::TRANSIENT, &shutdown, || async {
                Err("away")
            }),
        )
        .await
        .expect("shutdown ended the retrying");
        assert_eq!(done, None);
    }
}
