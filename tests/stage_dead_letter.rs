//! The at-least-once consume loop on the real broker: good messages are
//! forwarded, a malformed one goes to the dead-letter topic with its reason,
//! and offsets are committed only for what was handled.

mod common;

use std::time::Duration;

use common::*;
use mouthmap_bus::kafka::{
    Handler, Incoming, KafkaSettings, Producer, StageSettings, StartAt, consumer, ensure_topics,
    run_stage, store_offset,
};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::{HandleError, InMessage, OutMessage};
use mouthmap_contracts::{
    self, EndReason, Event, FrameEvent, SourceKind, StreamEnd, StreamStart, TopicKind, headers,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Validates `frames` messages and forwards them unchanged.
struct Relay {
    out_topic: String,
}

impl Handler for Relay {
    type Input = FrameEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, FrameEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        Ok(vec![OutMessage::new(
            &self.out_topic,
            input.event.stream_id(),
            input.msg.payload.clone(),
        )])
    }
}

fn start_event(id: &str) -> Vec<u8> {
    mouthmap_contracts::encode_envelope(
        &FrameEvent::Start(StreamStart {
            stream_id: id.into(),
            source: "test".into(),
            source_kind: SourceKind::File,
            fps: 25,
            started_at_ms: 0,
        }),
        &[],
    )
}

fn end_event(id: &str) -> Vec<u8> {
    mouthmap_contracts::encode_envelope(
        &FrameEvent::End(StreamEnd {
            stream_id: id.into(),
            reason: EndReason::Eos,
            error: None,
            frames: 0,
            chunks: 0,
            ended_at_ms: 0,
            frames_lost: 0,
            gaps: Vec::new(),
            cancelled: false,
        }),
        &[],
    )
}

async fn read(settings: &KafkaSettings, topic: &str, n: usize) -> Vec<InMessage> {
    let c = consumer(settings, &unique("reader"), &[topic], StartAt::Earliest).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages on {topic}", out.len()))
            .unwrap();
        out.push(InMessage::from_borrowed(&m));
    }
    out
}

/// An input, an output and a dead-letter topic of the test's own, one
/// partition each.
async fn fresh_topics(settings: &KafkaSettings) -> (String, String, String) {
    let (input, output, dlq) = (unique("in"), unique("out"), unique("dlq"));
    ensure_topics(settings, &[&input, &output, &dlq], 1, 1)
        .await
        .unwrap();
    (input, output, dlq)
}

/// How many messages `topic` holds (read until 5 s pass without one).
async fn count(settings: &KafkaSettings, topic: &str) -> usize {
    let c = consumer(settings, &unique("reader"), &[topic], StartAt::Earliest).unwrap();
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
        n += 1;
    }
    n
}

/// Runs `handler` in the at-least-once loop on `input` for `run`, then
/// commits what it stored before the consumer goes away.
async fn drive<H: Handler>(
    settings: &KafkaSettings,
    group: &str,
    input: &str,
    dlq: &str,
    handler: &mut H,
    run: Duration,
) {
    let c = consumer(settings, group, &[input], StartAt::Earliest).unwrap();
    let producer = Producer::new(settings).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stage = StageSettings {
        stage: "relay".into(),
        dead_letter_topic: dlq.into(),
        tick: Duration::from_millis(100),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    };
    let metrics = StageMetrics::new("relay");
    let task = async {
        run_stage(&c, &producer, handler, &stage, &metrics, rx)
            .await
            .unwrap()
    };
    tokio::join!(task, async {
        tokio::time::sleep(run).await;
        tx.send(true).unwrap();
    });
    // (NoOffset: the auto-commit already committed everything stored.)
    match c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => panic!("commit failed: {e}"),
    }
}

async fn run_for(
    settings: &KafkaSettings,
    group: &str,
    input: &str,
    output: &str,
    dlq: &str,
    run: Duration,
) {
    let mut relay = Relay {
        out_topic: output.into(),
    };
    drive(settings, group, input, dlq, &mut relay, run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_go_to_the_dead_letter_topic_and_nothing_is_reprocessed() {
    if !available(&[Need::Broker]) {
        return;
    }
    let settings = KafkaSettings::new(brokers(), "mouthmap-test");
    let (input, output, dlq) = fresh_topics(&settings).await;
    let producer = Producer::new(&settings).unwrap();
    let id = unique("s");
    for payload in [
        start_event(&id),
        b"not an envelope".to_vec(),
        end_event(&id),
    ] {
        producer
            .send_and_wait(
                OutMessage::new(&input, &id, payload)
                    .header(headers::SCHEMA, TopicKind::Frames.schema_header()),
            )
            .await
            .unwrap();
    }
    let group = unique("relay");
    run_for(
        &settings,
        &group,
        &input,
        &output,
        &dlq,
        Duration::from_secs(8),
    )
    .await;

    let forwarded = read(&settings, &output, 2).await;
    assert!(matches!(
        forwarded[0].decode::<FrameEvent>().unwrap().0,
        FrameEvent::Start(_)
    ));
    assert!(matches!(
        forwarded[1].decode::<FrameEvent>().unwrap().0,
        FrameEvent::End(_)
    ));
    let dead = read(&settings, &dlq, 1).await;
    assert_eq!(dead[0].payload, b"not an envelope");
    assert_eq!(dead[0].key_str(), Some(id.as_str()));
    assert!(
        dead[0]
            .header(headers::DLQ_REASON)
            .unwrap()
            .contains("MMAP envelope magic")
    );
    assert_eq!(dead[0].header(headers::DLQ_TOPIC), Some(input.as_str()));
    assert_eq!(dead[0].header(headers::DLQ_OFFSET), Some("1"));
    assert_eq!(dead[0].header(headers::DLQ_STAGE), Some("relay"));
    assert_eq!(
        dead[0].header(headers::SCHEMA),
        Some("frames/v1"),
        "original headers kept"
    );

    // The group committed past all three: a restart handles only the new message.
    producer
        .send_and_wait(OutMessage::new(&input, &id, end_event(&id)))
        .await
        .unwrap();
    run_for(
        &settings,
        &group,
        &input,
        &output,
        &dlq,
        Duration::from_secs(8),
    )
    .await;
    let after = read(&settings, &output, 3).await;
    assert_eq!(after.len(), 3);
    assert_eq!(
        count(&settings, &output).await,
        3,
        "start, end, and the new end: nothing handled twice"
    );
}

/// Holds messages back and releases them two at a time, like a batcher.
/// Offsets are stored up to the oldest message still held.
struct Pairs {
    out_topic: String,
    queue: Vec<InMessage>,
    seen: Vec<i64>,
}

impl Handler for Pairs {
    type Input = FrameEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, FrameEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        self.seen.push(input.msg.offset);
        self.queue.push(input.msg.clone());
        Ok(Vec::new())
    }

    fn oldest_held(&self, topic: &str, partition: i32) -> Option<i64> {
        self.queue
            .iter()
            .filter(|m| m.topic == topic && m.partition == partition)
            .map(|m| m.offset)
            .min()
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        if self.queue.len() < 2 {
            return Ok(Vec::new());
        }
        Ok(self
            .queue
            .drain(..2)
            .map(|m| {
                OutMessage::new(
                    &self.out_topic,
                    m.key_str().unwrap_or_default(),
                    m.payload.clone(),
                )
            })
            .collect())
    }
}

async fn run_pairs(settings: &KafkaSettings, group: &str, input: &str, output: &str) -> Vec<i64> {
    let mut h = Pairs {
        out_topic: output.into(),
        queue: Vec::new(),
        seen: Vec::new(),
    };
    let dlq = unique("unused-dlq");
    drive(settings, group, input, &dlq, &mut h, Duration::from_secs(8)).await;
    h.seen
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_of_held_back_messages_are_not_committed() {
    if !available(&[Need::Broker]) {
        return;
    }
    let settings = KafkaSettings::new(brokers(), "mouthmap-test");
    let (input, output) = (unique("in"), unique("out"));
    ensure_topics(&settings, &[&input, &output], 1, 1)
        .await
        .unwrap();
    let producer = Producer::new(&settings).unwrap();
    for _ in 0..3 {
        producer
            .send_and_wait(OutMessage::new(&input, "k", start_event("k")))
            .await
            .unwrap();
    }
    let group = unique("pairs");
    // Messages 0 and 1 go out as a pair; 2 is still held when the stage stops.
    assert_eq!(
        run_pairs(&settings, &group, &input, &output).await,
        [0, 1, 2]
    );
    // Restarted, the group replays from the oldest message held back when it
    // stopped: message 2 is handled again (at least once, never lost).
    // Exactly from there: a stage that never committed would replay [0, 1, 2].
    let replay = run_pairs(&settings, &group, &input, &output).await;
    assert_eq!(replay, [2], "replayed from the wrong offset");
}

/// What a rebalance leaves behind: outputs acknowledged for a message whose
/// partition this consumer no longer holds. librdkafka refuses to store that
/// offset ("Erroneous state"); the stage loop leaves it to the partition's
/// new owner and goes on (once, this stopped a replica mid-test).
#[tokio::test(flavor = "multi_thread")]
async fn an_offset_of_a_partition_not_assigned_is_left_to_its_owner() {
    if !available(&[Need::Broker]) {
        return;
    }
    let settings = KafkaSettings::new(brokers(), "mouthmap-test");
    let topic = unique("unassigned");
    ensure_topics(&settings, &[&topic], 1, 1).await.unwrap();
    // Subscribed, but never polled: the partition is known, not assigned.
    let c = consumer(&settings, &unique("g"), &[&topic], StartAt::Earliest).unwrap();
    c.fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let got = c.store_offset(&topic, 0, 5);
    assert!(
        matches!(got, Err(KafkaError::StoreOffset(RDKafkaErrorCode::State))),
        "{got:?}"
    );
    store_offset(&c, &topic, 0, 5).unwrap();
}

/// Panics on every `end` event (a bug in a stage), relays the rest.
struct Brittle(Relay);

impl Handler for Brittle {
    type Input = FrameEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, FrameEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        if matches!(input.event, FrameEvent::End(_)) {
            panic!("bug on purpose");
        }
        self.0.handle(input).await
    }
}

/// One message that makes the stage panic is dead-lettered with the panic,
/// its offset stored, and the stage goes on with the next (before, the
/// panic stopped the stage, and the same message stopped it again after
/// every restart).
#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_stage_panics_on_is_dead_lettered_and_the_stage_goes_on() {
    if !available(&[Need::Broker]) {
        return;
    }
    let settings = KafkaSettings::new(brokers(), "mouthmap-test");
    let (input, output, dlq) = fresh_topics(&settings).await;
    let producer = Producer::new(&settings).unwrap();
    let (a, b) = (unique("a"), unique("b"));
    for (id, payload) in [
        (&a, start_event(&a)),
        (&a, end_event(&a)),
        (&b, start_event(&b)),
    ] {
        producer
            .send_and_wait(OutMessage::new(&input, id, payload))
            .await
            .unwrap();
    }
    let group = unique("brittle");
    let mut h = Brittle(Relay {
        out_topic: output.clone(),
    });
    drive(
        &settings,
        &group,
        &input,
        &dlq,
        &mut h,
        Duration::from_secs(6),
    )
    .await;
    let forwarded = read(&settings, &output, 2).await;
    assert_eq!(
        forwarded[1].key_str(),
        Some(b.as_str()),
        "the stage went on"
    );
    let dead = read(&settings, &dlq, 1).await;
    assert_eq!(dead[0].key_str(), Some(a.as_str()));
    let reason = dead[0].header(headers::DLQ_REASON).unwrap();
    assert!(
        reason.contains("panicked") && reason.contains("bug on purpose"),
        "{reason}"
    );
    // Its offset was stored: a restart does not meet it again.
    let mut again = Brittle(Relay {
        out_topic: output.clone(),
    });
    drive(
        &settings,
        &group,
        &input,
        &dlq,
        &mut again,
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(
        count(&settings, &dlq).await,
        1,
        "the panic was dead-lettered once"
    );
}
