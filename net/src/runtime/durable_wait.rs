//! Callers parked until a follower holds an LSN durably, woken in LSN
//! order.
//!
//! Synchronous replication parks every committer (and, on a synchronous
//! leader, every read) until a follower acknowledges its LSN as durable.
//! A watch channel would wake every parked caller on every
//! acknowledgement, and most would find their LSN not reached yet and park
//! again: on a busy machine those futile wake-ups cost more CPU than the
//! replication itself. Here an advance wakes exactly the callers it
//! satisfies.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

/// Most callers parked at once with an entry of their own. Past it a
/// caller polls instead (every [`POLL_EVERY`]): still correct, and memory
/// stays bounded when something upstream lets requests pile up.
pub const WAITERS_MAX: usize = 100_000;
/// How often a caller past [`WAITERS_MAX`] looks at the durable LSN.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// The highest LSN some follower holds durably, and the callers waiting
/// for it to reach theirs.
#[derive(Debug, Default)]
pub struct DurableWaiters {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    durable: u64,
    /// Keyed by (LSN, ticket): the ticket tells apart callers waiting for
    /// the same LSN, so each can remove its own entry.
    waiting: BTreeMap<(u64, u64), oneshot::Sender<()>>,
    next_ticket: u64,
}

impl DurableWaiters {
    /// The highest durable LSN reported so far (0 before any).
    pub fn durable(&self) -> u64 {
        self.lock().durable
    }

    /// Records that a follower holds everything up to `lsn` durably (an
    /// older report changes nothing: the value never goes back) and wakes
    /// exactly the callers waiting for an LSN at or below it.
    pub fn advance(&self, lsn: u64) {
        let woken = {
            let mut s = self.lock();
            if lsn <= s.durable {
                return;
            }
            s.durable = lsn;
            let later = s.waiting.split_off(&(lsn + 1, 0));
            std::mem::replace(&mut s.waiting, later)
        };
        // Woken outside the lock: a woken caller must not find it held.
        for (_, tx) in woken {
            let _ = tx.send(());
        }
    }

    /// Waits until the durable LSN reaches `lsn`, at most `timeout`.
    /// Returns whether it did. A caller that gives up (times out, or is
    /// dropped) leaves no entry behind.
    pub async fn wait(&self, lsn: u64, timeout: Duration) -> bool {
        let parked = {
            let mut s = self.lock();
            if s.durable >= lsn {
                return true;
            }
            (s.waiting.len() < WAITERS_MAX).then(|| {
                let ticket = s.next_ticket;
                s.next_ticket += 1;
                let (tx, rx) = oneshot::channel();
                s.waiting.insert((lsn, ticket), tx);
                (ticket, rx)
            })
        };
        let Some((ticket, rx)) = parked else {
            return self.poll(lsn, timeout).await;
        };
        let entry = Entry {
            owner: self,
            key: (lsn, ticket),
        };
        // Woken only by a send: a dropped sender is not a durable LSN.
        let woken = matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())));
        drop(entry);
        woken || self.durable() >= lsn
    }

    async fn poll(&self, lsn: u64, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while self.durable() < lsn {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        true
    }

    /// How many callers are parked with an entry.
    pub fn parked(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a caller's entry when it stops waiting, however it stops.
struct Entry<'a> {
    owner: &'a DurableWaiters,
    key: (u64, u64),
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.owner.lock().waiting.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn an_advance_wakes_exactly_the_callers_it_satisfies() {
        let w = Arc::new(DurableWaiters::default());
        let tasks: Vec<_> = (1..=10u64)
            .map(|lsn| {
                let w = w.clone();
                tokio::spawn(async move { (lsn, w.wait(lsn, Duration::from_secs(30)).await) })
            })
            .collect();
        while w.parked() < 10 {
            tokio::task::yield_now().await;
        }
        w.advance(4);
        // The four it satisfies leave; the six above stay parked.
        while w.parked() > 6 {
            tokio::task::yield_now().await;
        }
        assert_eq!(w.parked(), 6);
        let done: Vec<_> = tasks.iter().map(|t| t.is_finished()).collect();
        w.advance(3); // going back changes nothing
        assert_eq!(w.durable(), 4);
        w.advance(10);
        for t in tasks {
            let (lsn, ok) = t.await.expect("task");
            assert!(ok, "lsn {lsn} was reached");
        }
        assert_eq!(w.parked(), 0);
        // None of the six above 4 had finished before the second advance.
        assert!(done.iter().skip(4).all(|d| !d), "{done:?}");
    }

    #[tokio::test]
    async fn a_caller_that_times_out_or_is_dropped_leaves_no_entry() {
        let w = DurableWaiters::default();
        w.advance(5);
        assert!(w.wait(5, Duration::from_millis(1)).await, "already durable");
        assert!(!w.wait(6, Duration::from_millis(50)).await);
        assert_eq!(w.parked(), 0);
        {
            let fut = w.wait(7, Duration::from_secs(60));
            tokio::pin!(fut);
            assert!(
                tokio::time::timeout(Duration::from_millis(1), &mut fut)
                    .await
                    .is_err()
            );
            assert_eq!(w.parked(), 1);
        }
        assert_eq!(w.parked(), 0, "a dropped wait removes its entry");
    }

    #[tokio::test]
    async fn past_the_cap_callers_poll_and_still_see_the_advance() {
        let w = Arc::new(DurableWaiters::default());
        {
            let mut s = w.lock();
            for i in 0..WAITERS_MAX as u64 {
                let (tx, _rx) = oneshot::channel();
                s.waiting.insert((1_000, i), tx);
            }
            s.next_ticket = WAITERS_MAX as u64;
        }
        let w2 = w.clone();
        let t = tokio::spawn(async move { w2.wait(3, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(w.parked(), WAITERS_MAX, "the extra caller has no entry");
        w.advance(3);
        assert!(t.await.expect("task"));
        assert!(!w.wait(2_000, Duration::from_millis(20)).await);
    }
}
