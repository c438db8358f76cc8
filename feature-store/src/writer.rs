//! A non-blocking writer for stages that write features as they go: the
//! stage offers rows and moves on; a background task writes them, merging
//! rows of the same view and key that queued up meanwhile (only the latest
//! values matter). With Redis down, writes are dropped with a warning and
//! the next offer carries the newer values.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::online::{OnlineStore, Row};

/// Handle to the background writer. Dropping every handle ends the task
/// after it wrote what was queued.
#[derive(Clone)]
pub struct FeatureWriter {
    tx: mpsc::Sender<(String, String, Row)>,
    stats: Arc<WriterStats>,
}

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
        let (tx, mut rx) = mpsc::channel::<(String, String, Row)>(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            while let Some(first) = rx.recv().await {
                let mut pending: BTreeMap<(String, String), Row> = BTreeMap::new();
                let mut add = |(view, key, row): (String, String, Row)| {
                    pending.entry((view, key)).or_default().extend(row);
                };
                add(first);
                while let Ok(more) = rx.try_recv() {
                    add(more);
                }
                for ((view, key), row) in pending {
                    match store.write(&view, &key, &row).await {
                        Ok(()) => {
                            task_stats.written.fetch_add(1, Ordering::Relaxed);
                            if failing {
                                tracing::info!(view, "feature writes succeed again");
                                failing = false;
                            }
                        }
                        Err(e) => {
                            task_stats.failed.fetch_add(1, Ordering::Relaxed);
                            if !failing || !e.is_transient() {
                                tracing::warn!(view, key, error = %e, "feature write failed; newer values will be written when they come");
                            }
                            failing = e.is_transient();
                        }
                    }
                }
            }
        });
        (Self { tx, stats }, task)
    }

    /// Queues a row; false (and counted) when the queue is full.
    pub fn offer(&self, view: &str, key: &str, row: Row) -> bool {
        let ok = self
            .tx
            .try_send((view.to_string(), key.to_string(), row))
            .is_ok();
        if !ok {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}
