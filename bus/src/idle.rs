//! When is a stream idle? Judged by event time, per partition, as Kafka
//! Streams closes sessions by stream time: a stream is idle once the
//! newest event time seen on its partition has moved `idle` past the
//! stream's own newest (other streams went on without it). A backlog
//! upstream delays every stream of a partition alike, so it never makes
//! one look idle, as wall-clock time since the last message did (under a
//! saturated broker that closed live streams with a timed-out final, then
//! gave them a second final when their windows came).
//!
//! A partition where nothing moves at all has no event time to judge by:
//! there, a stream is idle after `idle` times [`WALL_CLOCK_FACTOR`] of
//! wall-clock time without a message of it, the last resort for a stream
//! whose source died alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// On a partition where nothing moves, a stream is idle after this many
/// times the idle time without a message.
pub const WALL_CLOCK_FACTOR: u32 = 10;

#[derive(Debug, Clone)]
struct Mark {
    partition: (String, i32),
    event_ms: i64,
    arrived: Instant,
}

/// Event time per partition and per stream.
#[derive(Debug, Default)]
pub struct IdleClock {
    partitions: HashMap<(String, i32), i64>,
    streams: HashMap<String, Mark>,
}

impl IdleClock {
    /// A message of `stream_id` from `topic`/`partition` whose event
    /// happened at `event_ms` (Unix ms: a frame's ingest time).
    pub fn saw(&mut self, stream_id: &str, topic: &str, partition: i32, event_ms: i64) {
        let key = (topic.to_string(), partition);
        let newest = self.partitions.entry(key.clone()).or_insert(event_ms);
        *newest = (*newest).max(event_ms);
        let mark = self.streams.entry(stream_id.to_string()).or_insert(Mark {
            partition: key.clone(),
            event_ms,
            arrived: Instant::now(),
        });
        mark.partition = key;
        mark.event_ms = mark.event_ms.max(event_ms);
        mark.arrived = Instant::now();
    }

    /// The stream ended (or was closed): no longer watched.
    pub fn forget(&mut self, stream_id: &str) {
        self.streams.remove(stream_id);
    }

    /// Streams idle for `idle`, by the rules above.
    pub fn idle(&self, idle: Duration) -> Vec<String> {
        let idle_ms = idle.as_millis() as i64;
        let mut out: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, m)| {
                let newest = self
                    .partitions
                    .get(&m.partition)
                    .copied()
                    .unwrap_or(m.event_ms);
                newest - m.event_ms >= idle_ms || m.arrived.elapsed() >= idle * WALL_CLOCK_FACTOR
            })
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    /// Streams watched.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_idle_when_its_partition_moved_on_without_it() {
        let mut c = IdleClock::default();
        c.saw("dead", "logits", 0, 1_000);
        c.saw("live", "logits", 0, 1_000);
        c.saw("live", "logits", 0, 20_000);
        assert!(c.idle(Duration::from_secs(30)).is_empty());
        c.saw("live", "logits", 0, 31_000);
        assert_eq!(c.idle(Duration::from_secs(30)), vec!["dead".to_string()]);
        c.forget("dead");
        assert!(c.idle(Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_backlog_makes_no_stream_idle_and_other_partitions_do_not_count() {
        let mut c = IdleClock::default();
        c.saw("a", "logits", 0, 1_000);
        c.saw("b", "logits", 1, 1_000);
        // Partition 1 runs far ahead; partition 0 is simply behind.
        c.saw("c", "logits", 1, 600_000);
        assert_eq!(c.idle(Duration::from_secs(30)), vec!["b".to_string()]);
        // Nothing at all arrives for a while: no event time moves, and the
        // wall-clock fallback is ten times the idle time.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.idle(Duration::from_millis(20)), vec!["b".to_string()]);
        assert_eq!(
            c.idle(Duration::from_millis(2)),
            vec!["a".to_string(), "b".to_string(), "c".to_string()]
        );
    }
}
