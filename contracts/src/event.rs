//! One typed path for every topic's events: the [`Event`] trait, and
//! [`decode`], the checks every consuming stage applies.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ContractError, TopicKind, decode_envelope, encode_envelope, validate_stream_id};

/// An event of one topic. Implemented by [`FrameEvent`](crate::FrameEvent),
/// [`MouthEvent`](crate::MouthEvent), [`LogitsEvent`](crate::LogitsEvent)
/// and [`Transcript`](crate::Transcript).
pub trait Event: Sized + Serialize + DeserializeOwned {
    /// The topic the event travels on.
    const TOPIC: TopicKind;

    /// The stream it belongs to: the message key.
    fn stream_id(&self) -> &str;

    /// Value of the `mm-event` header: `start`, `chunk`, `window`, `end`,
    /// `partial`, `final`.
    fn name(&self) -> &'static str;

    /// Checks the event against the payload it came with: sizes within
    /// [`limits`](crate::limits), the payload as long as the metadata says,
    /// and no payload on start and end events.
    fn check(&self, payload: &[u8]) -> Result<(), ContractError>;

    /// The message value: an envelope of the event and its payload.
    fn encode(&self, payload: &[u8]) -> Vec<u8> {
        encode_envelope(self, payload)
    }

    /// Splits a message value into the event and its payload, unchecked
    /// (use [`decode`]).
    fn parse(value: &[u8]) -> Result<(Self, &[u8]), ContractError> {
        decode_envelope(value)
    }
}

/// Parses and checks one message of `E`'s topic: the schema header (when
/// there is one) names `E`'s topic and this schema version; the value
/// parses; the stream id is valid and equals the key (when there is one);
/// the payload agrees with the metadata. Every consuming stage reads its
/// input through this.
pub fn decode<'a, E: Event>(
    value: &'a [u8],
    key: Option<&[u8]>,
    schema: Option<&str>,
) -> Result<(E, &'a [u8]), ContractError> {
    if value.len() > crate::MAX_MESSAGE_BYTES {
        return Err(ContractError::MessageTooLarge {
            size: value.len(),
            limit: crate::MAX_MESSAGE_BYTES,
        });
    }
    if let Some(found) = schema {
        let expected = E::TOPIC.schema_header();
        if found != expected {
            return Err(ContractError::SchemaMismatch {
                expected,
                found: found.to_string(),
            });
        }
    }
    let (event, payload) = E::parse(value)?;
    validate_stream_id(event.stream_id())?;
    if let Some(key) = key
        && key != event.stream_id().as_bytes()
    {
        return Err(ContractError::KeyMismatch {
            key: String::from_utf8_lossy(key).into_owned(),
            stream_id: event.stream_id().to_string(),
        });
    }
    event.check(payload)?;
    Ok((event, payload))
}

/// Start and end events carry no payload.
pub(crate) fn no_payload(payload: &[u8]) -> Result<(), ContractError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(ContractError::PayloadSize {
            expected: 0,
            actual: payload.len(),
        })
    }
}

/// A payload of exactly `expected` bytes.
pub(crate) fn expect_len(payload: &[u8], expected: usize) -> Result<(), ContractError> {
    if payload.len() == expected {
        Ok(())
    } else {
        Err(ContractError::PayloadSize {
            expected,
            actual: payload.len(),
        })
    }
}

/// Implements [`Event`] for a topic's `Start` / data / `End` enum: the data
/// variant is checked by its `validate`, start and end carry no payload.
macro_rules! stream_event {
    ($event:ident, $topic:expr, $data:ident => $name:literal) => {
        impl $crate::Event for $event {
            const TOPIC: $crate::TopicKind = $topic;

            fn stream_id(&self) -> &str {
                match self {
                    Self::Start(s) => &s.stream_id,
                    Self::$data(d) => &d.stream_id,
                    Self::End(e) => e.stream_id(),
                }
            }

            fn name(&self) -> &'static str {
                match self {
                    Self::Start(_) => "start",
                    Self::$data(_) => $name,
                    Self::End(_) => "end",
                }
            }

            fn check(&self, payload: &[u8]) -> Result<(), $crate::ContractError> {
                match self {
                    Self::$data(d) => d.validate(payload),
                    _ => $crate::event::no_payload(payload),
                }
            }
        }
    };
}
pub(crate) use stream_event;

/// A field within its upper bound.
pub(crate) fn at_most(field: &'static str, value: u64, max: u32) -> Result<(), ContractError> {
    if value <= max as u64 {
        Ok(())
    } else {
        Err(ContractError::OutOfRange {
            field,
            value,
            max: max as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameEvent, LogitsEvent, MouthEvent, StreamStart, Transcript, stream};

    fn start(id: &str) -> StreamStart {
        stream::tests::start(id)
    }

    #[test]
    fn the_schema_header_must_name_the_topic() {
        let bytes = FrameEvent::Start(start("s")).encode(&[]);
        assert!(decode::<FrameEvent>(&bytes, None, Some("frames/v1")).is_ok());
        assert_eq!(
            decode::<FrameEvent>(&bytes, None, Some("mouths/v1")).unwrap_err(),
            ContractError::SchemaMismatch {
                expected: "frames/v1".into(),
                found: "mouths/v1".into()
            }
        );
        assert!(matches!(
            decode::<FrameEvent>(&bytes, None, Some("frames/v2")),
            Err(ContractError::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_it_is_parsed() {
        let huge = vec![0u8; crate::MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<FrameEvent>(&huge, None, None),
            Err(ContractError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn the_key_must_be_the_stream_id() {
        let bytes = MouthEvent::Start(start("cam-1")).encode(&[]);
        assert!(decode::<MouthEvent>(&bytes, Some(b"cam-1"), None).is_ok());
        assert!(matches!(
            decode::<MouthEvent>(&bytes, Some(b"cam-2"), None),
            Err(ContractError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn start_and_end_carry_no_payload_on_any_topic() {
        let extra = ContractError::PayloadSize {
            expected: 0,
            actual: 1,
        };
        let bytes = FrameEvent::Start(start("s")).encode(&[1]);
        assert_eq!(decode::<FrameEvent>(&bytes, None, None).unwrap_err(), extra);
        let bytes = MouthEvent::Start(start("s")).encode(&[1]);
        assert_eq!(decode::<MouthEvent>(&bytes, None, None).unwrap_err(), extra);
        let bytes = LogitsEvent::Start(start("s")).encode(&[1]);
        assert_eq!(
            decode::<LogitsEvent>(&bytes, None, None).unwrap_err(),
            extra
        );
        let end = stream::tests::end("s");
        let bytes = LogitsEvent::End(end.clone()).encode(&[1]);
        assert_eq!(
            decode::<LogitsEvent>(&bytes, None, None).unwrap_err(),
            extra
        );
        let bytes = FrameEvent::End(end).encode(&[1]);
        assert_eq!(decode::<FrameEvent>(&bytes, None, None).unwrap_err(), extra);
    }

    #[test]
    fn bad_stream_ids_are_refused_on_every_topic() {
        let bytes = LogitsEvent::Start(start("a/b")).encode(&[]);
        assert!(matches!(
            decode::<LogitsEvent>(&bytes, None, None),
            Err(ContractError::BadStreamId(_))
        ));
        let t = serde_json::to_vec(&serde_json::json!({
            "stream_id": "..", "kind": "final", "text": "", "stable_prefix": "",
            "words": [], "confidence": 0.0, "model_version": "", "latency_ms": 0.0
        }))
        .unwrap();
        assert!(matches!(
            decode::<Transcript>(&t, None, None),
            Err(ContractError::BadStreamId(_))
        ));
    }
}
