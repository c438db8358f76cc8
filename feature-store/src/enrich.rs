//! Enrichment: what the store knows about a stream and its speaker, looked
//! up within a deadline. A lookup never holds a stream up: past the deadline,
//! or with Redis down, the answer is "not enriched" and the reason.

use std::time::Duration;

use serde_json::{Map, Value as Json};

use crate::FeatureError;
use crate::cache::CachedReader;
use crate::online::OnlineStore;

/// The entity a stream's features are kept under.
pub const STREAM: &str = "stream";
/// The entity a speaker's features are kept under.
pub const SPEAKER: &str = "speaker";

/// What the store knows about one stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Enrichment {
    /// `{view: {field: value}}` for every view of the stream and of its
    /// speaker that has anything stored.
    pub features: Map<String, Json>,
    pub speaker_id: Option<String>,
    /// The decoding the stream's features ask for: a grammar name (`grid`),
    /// or `lexicon:WORDS` from its `vocabulary`; None for the default.
    pub grammar: Option<String>,
}

/// Looks features up for streams, through a cache, within a deadline.
pub struct Enricher {
    reader: CachedReader,
    deadline: Duration,
    stream_views: Vec<String>,
    speaker_views: Vec<String>,
}

impl Enricher {
    pub fn new(store: OnlineStore, cache_max_age: Duration, deadline: Duration) -> Self {
        let views = |entity: &str| {
            store
                .registry()
                .views_of(entity)
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
        };
        let (stream_views, speaker_views) = (views(STREAM), views(SPEAKER));
        Self {
            reader: CachedReader::new(store, cache_max_age, 10_000),
            deadline,
            stream_views,
            speaker_views,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// (cache hits, misses) so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.reader.stats()
    }

    /// The stream's and its speaker's features, or why there are none this time.
    pub async fn lookup(&mut self, stream_id: &str) -> Result<Enrichment, FeatureError> {
        self.lookup_aged(stream_id, false).await
    }

    /// Like [`lookup`](Self::lookup), from Redis whatever the cache holds:
    /// for a stream's final transcript, which should carry its features as
    /// they stand at its end (its whole quality, its last settings), not as
    /// an earlier message of the same stream read them.
    pub async fn lookup_fresh(&mut self, stream_id: &str) -> Result<Enrichment, FeatureError> {
        self.lookup_aged(stream_id, true).await
    }

    async fn lookup_aged(
        &mut self,
        stream_id: &str,
        fresh: bool,
    ) -> Result<Enrichment, FeatureError> {
        let deadline = self.deadline;
        match tokio::time::timeout(deadline, self.lookup_now(stream_id, fresh)).await {
            Ok(r) => r,
            Err(_) => Err(FeatureError::Deadline(deadline)),
        }
    }

    async fn lookup_now(
        &mut self,
        stream_id: &str,
        fresh: bool,
    ) -> Result<Enrichment, FeatureError> {
        let mut out = Enrichment::default();
        let lookups: Vec<(&str, &str)> = self
            .stream_views
            .iter()
            .map(|v| (v.as_str(), stream_id))
            .collect();
        let rows = read(&mut self.reader, &lookups, fresh).await?;
        for (view, row) in self.stream_views.iter().zip(rows) {
            let Some(row) = row else { continue };
            if let Some(s) = row
                .get("speaker_id")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
            {
                out.speaker_id = Some(s.to_string());
            }
            if let Some(g) = row
                .get("grammar")
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
            {
                out.grammar = Some(g.trim().to_string());
            } else if let Some(words) = row
                .get("vocabulary")
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
            {
                out.grammar = Some(format!("lexicon:{}", words.trim()));
            }
            out.features.insert(view.clone(), to_json(&row));
        }
        if let Some(speaker) = out.speaker_id.clone() {
            let lookups: Vec<(&str, &str)> = self
                .speaker_views
                .iter()
                .map(|v| (v.as_str(), speaker.as_str()))
                .collect();
            let rows = read(&mut self.reader, &lookups, fresh).await?;
            for (view, row) in self.speaker_views.iter().zip(rows) {
                if let Some(row) = row {
                    out.features.insert(view.clone(), to_json(&row));
                }
            }
        }
        Ok(out)
    }
}

/// Rows through the cache, or past it when `fresh`.
async fn read(
    reader: &mut CachedReader,
    lookups: &[(&str, &str)],
    fresh: bool,
) -> Result<Vec<Option<crate::online::Row>>, FeatureError> {
    if fresh {
        reader.read_fresh(lookups).await
    } else {
        reader.read(lookups).await
    }
}

/// A row as a JSON object.
pub fn to_json(row: &crate::online::Row) -> Json {
    Json::Object(row.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}
