//! Group commit for ledger rows: the rows of requests that finish close
//! together in one isolate are written in one D1 batch instead of one batch
//! each. Under load most of the gateway's own CPU went to D1 calls (their
//! JS shim and, under `wrangler dev`, the local SQLite on the same thread),
//! and each call costs about the same whatever its size.
//!
//! The protocol, with no promise shared between requests (a promise resolved
//! from another request's context is not safe in Workers):
//! - the first row into an empty queue makes its request the *leader* of that
//!   generation; the leader's `waitUntil` sleeps a short window, then takes
//!   whatever is queued under its generation and writes it;
//! - later rows are *followers*: they join the queue and their request is
//!   done — the leader's `waitUntil`, still running, writes them;
//! - a row that fills the queue takes the whole batch and writes it at once
//!   (it becomes the leader of a full batch); the sleeping leader then finds
//!   its generation gone and writes nothing.
//!
//! Every row is thus owned by exactly one live `waitUntil`, and nothing is
//! lost when the isolate is evicted after its last response (the runtime
//! keeps it for pending `waitUntil` work).

/// What the caller must do after `push`.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<T> {
    /// Sleep the window, then `take(generation)` and write what it returns.
    Lead { generation: u64 },
    /// Nothing: the current leader writes this row.
    Follow,
    /// The queue is full: write these rows now.
    Flush(Vec<T>),
}

/// Rows waiting to be written, tagged with their batch's generation.
pub struct GroupCommit<T> {
    generation: u64,
    rows: Vec<T>,
    max_rows: usize,
}

impl<T> GroupCommit<T> {
    /// A queue that flushes early at `max_rows` rows (at least 1).
    pub fn new(max_rows: usize) -> Self {
        Self {
            generation: 0,
            rows: Vec::new(),
            max_rows: max_rows.max(1),
        }
    }

    pub fn push(&mut self, row: T) -> Push<T> {
        let first = self.rows.is_empty();
        self.rows.push(row);
        if self.rows.len() >= self.max_rows {
            // A new generation: the sleeping leader's `take` finds nothing.
            self.generation = self.generation.wrapping_add(1);
            return Push::Flush(std::mem::take(&mut self.rows));
        }
        if first {
            Push::Lead {
                generation: self.generation,
            }
        } else {
            Push::Follow
        }
    }

    /// The rows of `generation`, if its batch was not flushed already.
    pub fn take(&mut self, generation: u64) -> Vec<T> {
        if generation != self.generation || self.rows.is_empty() {
            return Vec::new();
        }
        self.generation = self.generation.wrapping_add(1);
        std::mem::take(&mut self.rows)
    }

    pub fn queued(&self) -> usize {
        self.rows.len()
    }
}

/// Writes `rows` with `write(group, tries)`; a group that fails as a whole
/// is halved until the halves go in, so one bad row costs a few extra writes
/// (about two per halving, not one per row — D1 counts each statement
/// against the invocation's query limit) and cannot take the others down.
/// A single row is written with two tries (D1 does not retry writes).
pub async fn write_halving<'a, T, F, Fut>(rows: &'a [T], mut write: F)
where
    F: FnMut(&'a [T], u32) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut pending: Vec<&'a [T]> = vec![rows];
    while let Some(group) = pending.pop() {
        if group.is_empty() {
            continue;
        }
        let tries = if group.len() == 1 { 2 } else { 1 };
        if write(group, tries).await || group.len() == 1 {
            continue;
        }
        let (first, second) = group.split_at(group.len() / 2);
        pending.push(second);
        pending.push(first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_row_leads_and_takes_the_followers() {
        let mut q = GroupCommit::new(10);
        assert_eq!(q.push(1), Push::Lead { generation: 0 });
        assert_eq!(q.push(2), Push::Follow);
        assert_eq!(q.push(3), Push::Follow);
        assert_eq!(q.take(0), vec![1, 2, 3]);
        assert_eq!(q.queued(), 0);
        // The next row starts a new batch with a new leader.
        assert_eq!(q.push(4), Push::Lead { generation: 1 });
        assert_eq!(q.take(1), vec![4]);
    }

    #[test]
    fn a_full_queue_flushes_and_the_old_leader_takes_nothing() {
        let mut q = GroupCommit::new(3);
        assert_eq!(q.push(1), Push::Lead { generation: 0 });
        assert_eq!(q.push(2), Push::Follow);
        assert_eq!(q.push(3), Push::Flush(vec![1, 2, 3]));
        assert_eq!(q.push(4), Push::Lead { generation: 1 });
        // The first leader wakes up: generation 0 is gone.
        assert!(q.take(0).is_empty());
        assert_eq!(q.queued(), 1, "row 4 still belongs to its own leader");
        assert_eq!(q.take(1), vec![4]);
    }

    #[test]
    fn a_batch_of_one_flushes_every_row_at_once() {
        let mut q = GroupCommit::new(0);
        assert_eq!(q.push(1), Push::Flush(vec![1]));
        assert_eq!(q.push(2), Push::Flush(vec![2]));
    }

    #[test]
    fn every_row_is_written_exactly_once_whatever_the_interleaving() {
        // Simulate leaders waking at arbitrary points: all rows come out once.
        let mut q = GroupCommit::new(4);
        let mut leaders = Vec::new();
        let mut written = Vec::new();
        for i in 0..100u32 {
            match q.push(i) {
                Push::Lead { generation } => leaders.push(generation),
                Push::Follow => {}
                Push::Flush(rows) => written.extend(rows),
            }
            if i % 7 == 0 {
                for g in leaders.drain(..) {
                    written.extend(q.take(g));
                }
            }
        }
        for g in leaders.drain(..) {
            written.extend(q.take(g));
        }
        written.sort_unstable();
        assert_eq!(written, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_group_is_halved_until_only_the_bad_row_fails() {
        let rows: Vec<u32> = (0..64).collect();
        let mut calls: Vec<(Vec<u32>, u32)> = Vec::new();
        let mut written: Vec<u32> = Vec::new();
        futures::executor::block_on(write_halving(&rows, |group: &[u32], tries| {
            calls.push((group.to_vec(), tries));
            let ok = !group.contains(&37);
            if ok {
                written.extend_from_slice(group);
            }
            async move { ok }
        }));
        written.sort_unstable();
        let expected: Vec<u32> = (0..64).filter(|r| *r != 37).collect();
        assert_eq!(written, expected, "every good row written once");
        // 1 whole + 2 per halving level (6 levels down to the single row).
        assert_eq!(calls.len(), 13);
        assert!(
            calls.contains(&(vec![37], 2)),
            "the bad row alone, with its second try"
        );
        assert!(calls.iter().filter(|c| c.0.len() > 1).all(|c| c.1 == 1));
    }

    #[test]
    fn a_group_that_goes_in_is_one_write() {
        let rows = [1, 2, 3];
        let mut calls = 0;
        futures::executor::block_on(write_halving(&rows, |_: &[i32], _| {
            calls += 1;
            async { true }
        }));
        assert_eq!(calls, 1);
    }
}
