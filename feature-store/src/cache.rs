//! A small in-process read cache with a bounded age, in front of the online
//! store: readers that look the same rows up for every message (the decoder)
//! go to Redis at most once per `max_age` per row.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::FeatureError;
use crate::online::{OnlineStore, Row};

/// A read-through cache of rows by (view, entity key).
pub struct CachedReader {
    store: OnlineStore,
    max_age: Duration,
    capacity: usize,
    entries: HashMap<(String, String), (Instant, Option<Row>)>,
    hits: u64,
    misses: u64,
}

impl CachedReader {
    /// `max_age` zero turns caching off.
    pub fn new(store: OnlineStore, max_age: Duration, capacity: usize) -> Self {
        Self {
            store,
            max_age,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn store(&self) -> &OnlineStore {
        &self.store
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Reads rows, from the cache where they are younger than `max_age`,
    /// the rest from Redis in one round trip.
    pub async fn read(
        &mut self,
        lookups: &[(&str, &str)],
    ) -> Result<Vec<Option<Row>>, FeatureError> {
        self.read_aged(lookups, self.max_age).await
    }

    /// Reads rows from Redis whatever the cache holds, and caches them: for
    /// a read whose answer is kept (a stream's final transcript), not one
    /// that the next message reads again.
    pub async fn read_fresh(
        &mut self,
        lookups: &[(&str, &str)],
    ) -> Result<Vec<Option<Row>>, FeatureError> {
        self.read_aged(lookups, Duration::ZERO).await
    }

    /// Reads rows, from the cache where they are younger than `max_age`.
    async fn read_aged(
        &mut self,
        lookups: &[(&str, &str)],
        max_age: Duration,
    ) -> Result<Vec<Option<Row>>, FeatureError> {
        let mut out: Vec<Option<Option<Row>>> = Vec::with_capacity(lookups.len());
        let mut missing: Vec<(&str, &str)> = Vec::new();
        for &(view, key) in lookups {
            match self.entries.get(&(view.to_string(), key.to_string())) {
                Some((at, row)) if !max_age.is_zero() && at.elapsed() < max_age => {
                    self.hits += 1;
                    out.push(Some(row.clone()));
                }
                _ => {
                    self.misses += 1;
                    out.push(None);
                    missing.push((view, key));
                }
            }
        }
        if !missing.is_empty() {
            let fetched = self.store.read(&missing).await?;
            let now = Instant::now();
            let mut fetched = fetched.into_iter();
            for (slot, &(view, key)) in out.iter_mut().filter(|s| s.is_none()).zip(&missing) {
                let row = fetched.next().expect("one row per lookup");
                if !self.max_age.is_zero() {
                    self.insert((view.to_string(), key.to_string()), now, row.clone());
                }
                *slot = Some(row);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every slot filled"))
            .collect())
    }

    fn insert(&mut self, key: (String, String), at: Instant, row: Option<Row>) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // Drop what has expired; if still full, the oldest entry.
            let max_age = self.max_age;
            self.entries.retain(|_, (t, _)| t.elapsed() < max_age);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (at, row));
    }

    /// Forgets every cached row.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
