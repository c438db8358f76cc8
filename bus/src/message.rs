//! Messages as the stages see them, detached from librdkafka: what was
//! consumed ([`InMessage`]) and what to produce ([`OutMessage`]), with the
//! one builder of outgoing events ([`OutMessage::event`]) and the one reader
//! of incoming ones ([`InMessage::decode`]).

use mouthmap_contracts::{ContractError, Event, headers};

/// A message to produce.
#[derive(Debug, Clone)]
pub struct OutMessage {
    pub topic: String,
    pub key: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl OutMessage {
    pub fn new(topic: impl Into<String>, key: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key: key.into(),
            headers: Vec::new(),
            payload,
        }
    }

    pub fn header(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((key.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Adds every `(name, value)` pair, for example a trace context.
    pub fn headers<I, K, V>(mut self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: AsRef<[u8]>,
    {
        for (k, v) in pairs {
            self.headers.push((k.into(), v.as_ref().to_vec()));
        }
        self
    }
}

impl OutMessage {
    /// The message for one event of `E`'s topic: key = its stream id,
    /// headers = schema (`<topic>/v<version>`) and event name, value = the
    /// event encoded with its payload. Add the trace context with
    /// [`headers`](Self::headers).
    pub fn event<E: Event>(topic: &str, event: &E, payload: &[u8]) -> Self {
        Self::new(topic, event.stream_id(), event.encode(payload))
            .header(headers::SCHEMA, E::TOPIC.schema_header())
            .header(headers::EVENT, event.name())
    }
}

/// A consumed message, detached from librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct InMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The message's Kafka timestamp (create or log-append time), Unix ms.
    pub timestamp_ms: Option<i64>,
}

impl InMessage {
    /// The first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }
}

impl InMessage {
    /// The event of `E`'s topic in this message, checked against the
    /// contract: schema header, key, envelope, sizes, payload
    /// ([`mouthmap_contracts::decode`]).
    pub fn decode<E: Event>(&self) -> Result<(E, &[u8]), ContractError> {
        mouthmap_contracts::decode(
            &self.payload,
            self.key.as_deref(),
            self.header(headers::SCHEMA),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mouthmap_contracts::{SourceKind, StreamStart, TopicKind, Transcript, TranscriptKind};

    fn consumed(out: OutMessage) -> InMessage {
        InMessage {
            topic: out.topic,
            partition: 0,
            offset: 0,
            key: Some(out.key.into_bytes()),
            payload: out.payload,
            headers: out.headers,
            timestamp_ms: None,
        }
    }

    #[test]
    fn built_events_decode_with_every_check_passing() {
        let start = mouthmap_contracts::FrameEvent::Start(StreamStart {
            stream_id: "cam-1".into(),
            source: "x".into(),
            source_kind: SourceKind::File,
            fps: 25,
            started_at_ms: 0,
        });
        let msg = consumed(OutMessage::event("frames", &start, &[]));
        assert_eq!(msg.header(headers::SCHEMA), Some("frames/v1"));
        assert_eq!(msg.header(headers::EVENT), Some("start"));
        assert_eq!(msg.key_str(), Some("cam-1"));
        let (back, _) = msg.decode::<mouthmap_contracts::FrameEvent>().unwrap();
        assert_eq!(back, start);
        // The same bytes read as another topic fail on the schema header.
        assert!(matches!(
            msg.decode::<mouthmap_contracts::MouthEvent>(),
            Err(ContractError::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn transcripts_go_out_as_json() {
        let t = Transcript::empty("cam-1", TranscriptKind::Partial);
        let msg = consumed(OutMessage::event("transcripts", &t, &[]));
        assert_eq!(
            msg.header(headers::SCHEMA),
            Some(TopicKind::Transcripts.schema_header().as_str())
        );
        assert_eq!(msg.header(headers::EVENT), Some("partial"));
        assert_eq!(msg.decode::<Transcript>().unwrap().0, t);
    }
}
