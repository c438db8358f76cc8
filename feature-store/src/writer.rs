//! A non-blocking writer for stages that write features as they go: the
//! stage offers rows and moves on; a background task writes them, merging
//! rows of the same view and key that queued up meanwhile (only the latest
//! values matter). With Redis down, writes are dropped with a warning and
//! the next offer carries the newer values. A row that must be stored
//! before something else happens (a stream's last quality, before its end
//! goes downstream) is queued with [`FeatureWriter::offer_acked`], whose
//! receiver says when it was written; its write is tried once more after
//! the store's retry pause when the first try fails for a passing reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::online::{OnlineStore, Row};

/// Handle to the background writer. Dropping every handle ends the task
/// after it wrote what was queued.
#[derive(Clone)]
pub struct FeatureWriter {
    tx: mpsc::Sender<Queued>,
    stats: Arc<WriterStats>,
}

/// A queued row: view, key, fields, and who waits for it to be written.
type Queued = (String, String, Row, Option<oneshot::Sender<bool>>);

/// Counts of the writer's work.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    pub failed: AtomicU64,
    /// Offers refused because the queue was full.
    pub dropped: AtomicU64,
}

impl FeatureWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: OnlineStore, capacity: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Queued>(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            while let Some(first) = rx.recv().await {
                type Pending = (Row, Vec<oneshot::Sender<bool>>);
                let mut pending: BTreeMap<(String, String), Pending> = BTreeMap::new();
                let mut add = |(view, key, row, ack): Queued| {
                    let (fields, acks) = pending.entry((view, key)).or_default();
                    fields.extend(row);
                    acks.extend(ack);
                };
                add(first);
                while let Ok(more) = rx.try_recv() {
                    add(more);
                }
                for ((view, key), (row, acks)) in pending {
                    let mut result = store.write(&view, &key, &row).await;
                    if !acks.is_empty() && result.as_ref().is_err_and(|e| e.is_transient()) {
                        // Someone waits for this row (a stream's last quality,
                        // before its end goes downstream): one more try once the
                        // store connects again, so a moment's stall (a loaded
                        // machine, a Redis still loading) does not lose it.
                        tokio::time::sleep(store.retry_pause()).await;
                        result = store.write(&view, &key, &row).await;
                    }
                    let written = match result {
                        Ok(()) => {
                            task_stats.written.fetch_add(1, Ordering::Relaxed);
                            if failing {
                                tracing::info!(view, "feature writes succeed again");
                                failing = false;
                            }
                            true
                        }
                        Err(e) => {
                            task_stats.failed.fetch_add(1, Ordering::Relaxed);
                            if !failing || !e.is_transient() {
                                tracing::warn!(view, key, error = %e, "feature write failed; newer values will be written when they come");
                            }
                            failing = e.is_transient();
                            false
                        }
                    };
                    for ack in acks {
                        // The waiter may have given up: nothing to tell.
                        let _ = ack.send(written);
                    }
                }
            }
        });
        (Self { tx, stats }, task)
    }

    /// Queues a row; false (and counted) when the queue is full.
    pub fn offer(&self, view: &str, key: &str, row: Row) -> bool {
        self.queue((view.to_string(), key.to_string(), row, None))
    }

    /// Queues a row like [`offer`](Self::offer); the receiver hears `true`
    /// once it is written, `false` if the write failed. None (and counted)
    /// when the queue is full.
    pub fn offer_acked(&self, view: &str, key: &str, row: Row) -> Option<oneshot::Receiver<bool>> {
        let (ack, heard) = oneshot::channel();
        self.queue((view.to_string(), key.to_string(), row, Some(ack)))
            .then_some(heard)
    }

    fn queue(&self, row: Queued) -> bool {
        let ok = self.tx.try_send(row).is_ok();
        if !ok {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}
