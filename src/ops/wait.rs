//! Bounded waiting: every wait in the operations layer goes through here, so
//! each one has a deadline and a poll interval.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` every `interval` until it yields `Some`, or `timeout` passes.
/// Returns `None` on timeout.
pub async fn poll_until<T, F, Fut>(timeout: Duration, interval: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() + interval > deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let start = Instant::now();
        let r: Option<()> = poll_until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { None },
        )
        .await;
        assert!(r.is_none());
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut n = 0;
        let r = poll_until(Duration::from_secs(1), Duration::from_millis(1), || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(r, Some(3));
    }
}
