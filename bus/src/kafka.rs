//! The Kafka edge: producer, topic administration and the at-least-once
//! consume loop shared by every stage.
//!
//! Everything here speaks plain Kafka through librdkafka; nothing depends on
//! the broker being Apache Kafka, Redpanda or Tansu.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::watch;

use mouthmap_contracts::{Event, headers};

use crate::error::{ErrorKind, HandleError, Policy};
pub use crate::message::{InMessage, OutMessage};
use crate::metrics::StageMetrics;

/// Errors at the Kafka edge.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("could not create the Kafka {what} for brokers {brokers}: {source}")]
    Client {
        what: &'static str,
        brokers: String,
        source: KafkaError,
    },
    #[error("creating topic {topic} failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("Kafka request failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("message for {topic} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        topic: String,
        size: usize,
        limit: usize,
    },
    #[error("stage stopped: {0}")]
    Fatal(String),
    /// No assignment came for [`REJOIN_AFTER`] since the consumer subscribed
    /// or a rebalance took its partitions, while it kept asking: its group is
    /// stuck. Seen on Tansu 0.6, which never evicts a static member: after a
    /// broker restart a static member that had to rejoin under a new member
    /// id waited for a leader that was its own old id, and a replica that
    /// replaces a dead one waits for the dead one. The caller joins again
    /// with a new consumer without static membership, whose joins make the
    /// broker drop members silent for the session timeout (`run_service`).
    #[error(
        "no partitions assigned for {waited:?} since joining or the last rebalance; the consumer group is stuck"
    )]
    RebalanceStuck { waited: Duration },
    /// librdkafka's local queue is full (the broker is slow or away): wait
    /// for acknowledgements and send the message again.
    #[error("the producer's queue is full")]
    QueueFull,
}

/// Connection settings shared by producers, consumers and the admin client.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Client id reported to the broker (shows in its logs and quotas).
    pub client_id: String,
    /// Extra librdkafka settings (`security.protocol`, `sasl.mechanism`, ...),
    /// applied last so they override the defaults here.
    pub options: Vec<(String, String)>,
    /// Static group membership (KIP-345): this replica's stable identity.
    /// A replica restarted under the same id takes its partitions back at
    /// once instead of waiting for (or, on brokers that never evict, never
    /// getting) a rebalance. Each replica of a group needs its own.
    pub instance_id: Option<String>,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            options: Vec::new(),
            instance_id: None,
        }
    }

    /// The consumers' `session.timeout.ms`: [`SESSION_TIMEOUT`] unless an
    /// option sets another.
    pub fn session_timeout(&self) -> Duration {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == "session.timeout.ms")
            .and_then(|(_, v)| v.parse().ok())
            .map_or(SESSION_TIMEOUT, Duration::from_millis)
    }

    fn base(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        cfg
    }

    fn finish(&self, mut cfg: ClientConfig) -> ClientConfig {
        for (k, v) in &self.options {
            cfg.set(k, v);
        }
        cfg
    }
}

impl InMessage {
    /// Copies a message out of librdkafka's buffers.
    pub fn from_borrowed(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// Where a produced message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Idempotent, zstd-compressed producer.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    max_message_bytes: usize,
    settings: KafkaSettings,
}

impl Producer {
    /// The settings the producer was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    pub fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        let mut cfg = settings.base();
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .set(
                "message.max.bytes",
                mouthmap_contracts::MAX_MESSAGE_BYTES.to_string(),
            );
        let inner = settings
            .finish(cfg)
            .create::<FutureProducer>()
            .map_err(|source| BusError::Client {
                what: "producer",
                brokers: settings.brokers.clone(),
                source,
            })?;
        Ok(Self {
            inner,
            max_message_bytes: mouthmap_contracts::MAX_MESSAGE_BYTES,
            settings: settings.clone(),
        })
    }

    /// A new producer with the same settings, so a new producer identity:
    /// after a broker restart that forgot the idempotent producer's state
    /// (Tansu 0.6 does), the old identity's messages are refused for good,
    /// a new one's are taken. Messages still queued in this one stay there.
    pub fn renewed(&self) -> Result<Self, BusError> {
        Self::new(&self.settings)
    }

    /// Enqueues a message (librdkafka copies it; the caller may keep it, to
    /// send it again) and returns a future that resolves once the broker
    /// acknowledged it. Messages enqueued in order stay in order per partition.
    pub fn send(
        &self,
        msg: &OutMessage,
    ) -> Result<impl Future<Output = Result<Delivered, BusError>> + Send + use<>, BusError> {
        let size = msg.payload.len() + msg.key.len();
        if size > self.max_message_bytes {
            return Err(BusError::TooLarge {
                topic: msg.topic.clone(),
                size,
                limit: self.max_message_bytes,
            });
        }
        let mut hdrs = OwnedHeaders::new_with_capacity(msg.headers.len());
        for (k, v) in &msg.headers {
            hdrs = hdrs.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let record = FutureRecord::to(&msg.topic)
            .key(&msg.key)
            .payload(&msg.payload)
            .headers(hdrs);
        let sent = self.inner.send_result(record).map_err(|(e, _)| e);
        let fut = match sent {
            Ok(fut) => fut,
            // The caller may wait and send the same message again.
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                return Err(BusError::QueueFull);
            }
            Err(e) => return Err(BusError::Kafka(e)),
        };
        Ok(async move {
            match fut.await {
                Ok(Ok(d)) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((e, _))) => Err(BusError::Kafka(e)),
                Err(_) => Err(BusError::Fatal("producer was dropped".into())),
            }
        })
    }

    /// Sends and waits for the acknowledgement.
    pub async fn send_and_wait(&self, msg: OutMessage) -> Result<Delivered, BusError> {
        self.send(&msg)?.await
    }

    /// Waits until every enqueued message is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        use rdkafka::producer::Producer as _;
        self.inner.flush(Timeout::After(timeout))?;
        Ok(())
    }
}

/// Creates the topics that do not exist yet. Existing topics are left as
/// they are (their partition count is not changed).
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .finish(settings.base())
        .create()
        .map_err(|source| BusError::Client {
            what: "admin client",
            brokers: settings.brokers.clone(),
            source,
        })?;
    // The broker refuses a message over the limit every producer here keeps
    // to (plus room for its batch framing), so no consumer is ever handed
    // one it would have to refuse.
    let max_bytes = (mouthmap_contracts::MAX_MESSAGE_BYTES + 64 * 1024).to_string();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(replication))
                .set("max.message.bytes", &max_bytes)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(BusError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// The consumer every stage runs: librdkafka's statistics (every
/// [`STATISTICS_EVERY`]) give each held partition's lag to the
/// `mouthmap_consumer_lag` gauge.
pub type BusConsumer = StreamConsumer<LagContext>;

/// How often librdkafka reports its statistics (consumer lag among them).
pub const STATISTICS_EVERY: Duration = Duration::from_secs(5);

/// Publishes the consumer lag librdkafka reports, labelled with the stage:
/// the client id without its `mouthmap-` prefix (`mouthmap-infer`: `infer`).
pub struct LagContext {
    stage: String,
    /// Since when this consumer has waited for an assignment: from its
    /// creation, and from each rebalance that took its partitions, until an
    /// assignment comes (see [`LagContext::waiting_for_assignment`]).
    waiting_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl LagContext {
    /// How long this consumer has waited to join its group: since it
    /// subscribed or a rebalance took its partitions, with no assignment
    /// (not even an empty one) since. None when it holds an assignment,
    /// which is also the state of a replica given no partitions.
    pub fn waiting_for_assignment(&self) -> Option<Duration> {
        self.waiting_since
            .lock()
            .ok()
            .and_then(|at| at.map(|t| t.elapsed()))
    }
}

impl rdkafka::ClientContext for LagContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition < 0 {
                    continue; // librdkafka's internal unassigned partition
                }
                // -1: not a partition this replica holds (or not known yet).
                let lag = (p.consumer_lag >= 0).then_some(p.consumer_lag);
                crate::metrics::set_consumer_lag(&self.stage, topic, partition, lag);
            }
        }
    }
}

/// Every rebalance is logged with the partitions it gave or took, so an
/// operator (and a fault test) sees which replica holds what.
impl ConsumerContext for LagContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let list = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Ok(mut at) = self.waiting_since.lock() {
                    *at = None;
                }
                tracing::info!(stage = %self.stage, partitions = %list(tpl), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                if let Ok(mut at) = self.waiting_since.lock() {
                    at.get_or_insert_with(std::time::Instant::now);
                }
                tracing::info!(stage = %self.stage, partitions = %list(tpl), "partitions revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(stage = %self.stage, error = %e, "rebalance failed")
            }
        }
    }
}

/// Where a consumer group starts when it has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// A consumer in `group` that commits only offsets stored explicitly with
/// [`StreamConsumer::store_offset_from_message`] (at-least-once).
pub fn consumer(
    settings: &KafkaSettings,
    group: &str,
    topics: &[&str],
    start: StartAt,
) -> Result<BusConsumer, BusError> {
    let mut cfg = settings.base();
    if let Some(id) = &settings.instance_id {
        // Unique per group, so one id can name a replica of every stage.
        cfg.set("group.instance.id", format!("{group}-{id}"));
    }
    cfg.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match start {
                StartAt::Earliest => "earliest",
                StartAt::Latest => "latest",
            },
        )
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        // Return a fetch within 20 ms even when little has arrived: stages
        // hand messages on one by one, and some brokers (Tansu) hold a
        // fetch for the whole wait. Override with --kafka-option.
        .set("fetch.wait.max.ms", "20")
        .set("fetch.message.max.bytes", "2097152")
        // Prefetch at most 16 MB per consumer (librdkafka's default, 64 MB,
        // is what a slow broker's bursts filled in the soak): a stage takes
        // messages far faster than its broker sends them, so this costs
        // nothing but bounds the memory.
        .set("queued.max.messages.kbytes", "16384")
        .set(
            "statistics.interval.ms",
            STATISTICS_EVERY.as_millis().to_string(),
        );
    let context = LagContext {
        stage: settings
            .client_id
            .strip_prefix("mouthmap-")
            .unwrap_or(&settings.client_id)
            .to_string(),
        waiting_since: std::sync::Mutex::new(Some(std::time::Instant::now())),
    };
    let consumer: BusConsumer =
        settings
            .finish(cfg)
            .create_with_context(context)
            .map_err(|source| BusError::Client {
                what: "consumer",
                brokers: settings.brokers.clone(),
                source,
            })?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// The logic of a consuming stage behind the consume loop: one input
/// event in, zero or more output messages out. The loop decodes and checks
/// every message as [`Handler::Input`] (schema header, key, envelope,
/// sizes, payload) before the handler sees it; a message that breaks the
/// contract is dead-lettered there.
pub trait Handler: Send {
    /// The event type of the input topic.
    type Input: Event + Send + Sync;

    fn handle(
        &mut self,
        input: Incoming<'_, Self::Input>,
    ) -> impl Future<Output = Result<Vec<OutMessage>, HandleError>> + Send;

    /// The oldest input offset on `topic`/`partition` whose output is still
    /// held back (a batch queue), or None when nothing of that partition is.
    /// Offsets are stored only below it, so a crash never skips input whose
    /// output was not produced, while older input is still committed.
    fn oldest_held(&self, topic: &str, partition: i32) -> Option<i64> {
        let _ = (topic, partition);
        None
    }

    /// Called on every flush tick, for stages that hold state (batches,
    /// idle streams). Whatever it returns is produced like handle's output;
    /// an error with [`Policy::Stop`] stops the loop.
    fn on_tick(&mut self) -> impl Future<Output = Result<Vec<OutMessage>, HandleError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// One decoded input message: the event, its payload, and the message it
/// came in (headers for the trace context).
pub struct Incoming<'a, E> {
    pub event: &'a E,
    pub payload: &'a [u8],
    pub msg: &'a InMessage,
}

/// Settings of [`run_stage`].
#[derive(Debug, Clone)]
pub struct StageSettings {
    /// Stage name in logs, metrics and dead-letter headers.
    pub stage: String,
    pub dead_letter_topic: String,
    pub tick: Duration,
    /// Backoff after a retryable failure: starts here, doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Messages handled whose output is produced but not yet acknowledged, at
/// most this many: the loop goes on consuming meanwhile (a broker round trip
/// per message would cap a stage at a few hundred messages a second).
pub const MAX_IN_FLIGHT: usize = 256;

/// How long a stage or ingest sends again what the broker failed to take
/// (a broker that restarts refuses what it is sent while it comes back, and
/// may have forgotten an idempotent producer's identity).
pub const REDELIVER_FOR: Duration = Duration::from_secs(120);

/// How long a group member may stay silent before the broker drops it
/// (`session.timeout.ms`; `--kafka-option` may set another, see
/// [`KafkaSettings::session_timeout`]).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer that gets no assignment for this long after subscribing or
/// after a rebalance took its partitions, while it keeps polling, makes
/// [`run_stage`] return [`BusError::RebalanceStuck`] (a healthy join or
/// rebalance takes seconds).
pub const REJOIN_AFTER: Duration = Duration::from_secs(30);

/// Pause before sending failed messages again, by a renewed producer.
pub const REDELIVER_AFTER: Duration = Duration::from_secs(1);

/// A handled input message's outputs on their way to the broker.
struct Flight {
    /// The input message: topic, partition, offset.
    key: (String, i32, i64),
    out: Vec<OutMessage>,
    /// When its outputs were first sent.
    first_sent: std::time::Instant,
    /// Sent again after a failed delivery.
    resent: bool,
}

type Acked = std::pin::Pin<Box<dyn Future<Output = (Flight, Result<(), BusError>)> + Send>>;

/// Enqueues every output of `flight` and returns a future that resolves
/// once all of them are acknowledged, or one failed. Err only for an output
/// over the message limit, which no retry can send.
fn enqueue(producer: &Producer, flight: Flight) -> Result<Acked, BusError> {
    let mut acks = Vec::with_capacity(flight.out.len());
    for i in 0..flight.out.len() {
        let sent = producer.send(&flight.out[i]);
        match sent {
            Ok(ack) => acks.push(ack),
            Err(e @ BusError::TooLarge { .. }) => return Err(e),
            // Refused at once (a full queue, a producer fenced by a broker
            // that restarted): the whole flight is sent again.
            Err(e) => return Ok(Box::pin(async move { (flight, Err(e)) })),
        }
    }
    Ok(Box::pin(async move {
        let mut result = Ok(());
        for ack in acks {
            if let Err(e) = ack.await {
                result = Err(e);
            }
        }
        (flight, result)
    }))
}

/// The at-least-once consume loop, one `tokio::select!` over input, broker
/// acknowledgements, a flush tick and the shutdown signal. For each message:
/// decode and check it as `H::Input`, handle it and enqueue every output;
/// the loop goes on with the next message while up to [`MAX_IN_FLIGHT`] are
/// unacknowledged. A message's offset is stored only once all its outputs
/// are acknowledged, in input order, and while it is older than anything the
/// handler still holds back on its partition ([`Handler::oldest_held`]). What a failure does is the error's [`Policy`]: a bad message is
/// produced to the dead-letter topic (with the reason in
/// [`headers::DLQ_REASON`]) and its offset stored once that is
/// acknowledged; a passing failure is retried after a backoff; a fatal one
/// stops the loop with the offset not stored.
///
/// A failed delivery (the broker restarting, or back but refusing a
/// producer identity it forgot) is not a reason to stop: consuming pauses,
/// and once everything in flight settled the failed outputs are sent again
/// by a renewed producer, in input order, for [`REDELIVER_FOR`]; offsets
/// are stored again once they are all acknowledged.
pub async fn run_stage<H: Handler>(
    consumer: &BusConsumer,
    producer: &Producer,
    handler: &mut H,
    settings: &StageSettings,
    metrics: &StageMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BusError> {
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Acknowledged messages whose offsets wait for the handler to release
    // what it holds back.
    let mut held: Vec<(String, i32, i64)> = Vec::new();
    let mut in_flight: FuturesOrdered<Acked> = FuturesOrdered::new();
    let mut producer = producer.clone();
    // Flights whose delivery failed, to send again at `retry_at`, and how
    // many sent again are still on their way: offsets wait for both.
    let mut retry: VecDeque<Flight> = VecDeque::new();
    let mut retry_at = tokio::time::Instant::now();
    let mut resending = 0usize;
    let flight = |key, out| Flight {
        key,
        out,
        first_sent: std::time::Instant::now(),
        resent: false,
    };
    // The first tick checks health at once.
    let mut last_health_check = std::time::Instant::now()
        .checked_sub(HEALTH_EVERY)
        .unwrap_or_else(std::time::Instant::now);
    // Stores the offsets of acknowledged messages below what the handler
    // still holds back, in input order per partition; keeps the rest.
    let release = |held: &mut Vec<(String, i32, i64)>, handler: &H| -> Result<(), BusError> {
        // Acknowledged out of order after a redelivery: stored in order.
        held.sort();
        let mut blocked: Vec<(String, i32)> = Vec::new();
        let mut kept = Vec::new();
        for (topic, partition, offset) in held.drain(..) {
            let stuck = blocked.iter().any(|(t, p)| *t == topic && *p == partition)
                || handler
                    .oldest_held(&topic, partition)
                    .is_some_and(|oldest| offset >= oldest);
            if stuck {
                blocked.push((topic.clone(), partition));
                kept.push((topic, partition, offset));
            } else {
                store_offset(consumer, &topic, partition, offset)?;
            }
        }
        *held = kept;
        Ok(())
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                tracing::info!(stage = %settings.stage, in_flight = in_flight.len(),
                    "shutdown requested; waiting for acknowledgements, then stopping");
                // What is not acknowledged now is not stored, and comes again.
                while let Some((f, result)) = in_flight.next().await {
                    if result.is_ok() {
                        held.push(f.key);
                    } else {
                        retry.push_back(f);
                    }
                }
                if retry.is_empty() {
                    release(&mut held, handler)?;
                }
                break;
            }
            Some((f, result)) = in_flight.next(), if !in_flight.is_empty() => {
                if f.resent {
                    resending -= 1;
                }
                match result {
                    Ok(()) => held.push(f.key),
                    Err(e) if f.first_sent.elapsed() < REDELIVER_FOR => {
                        metrics.error(ErrorKind::Produce);
                        tracing::warn!(stage = %settings.stage, error = %e, topic = %f.key.0,
                            partition = f.key.1, offset = f.key.2,
                            "delivery failed; consuming paused, sending it again");
                        retry.push_back(f);
                        retry_at = tokio::time::Instant::now() + REDELIVER_AFTER;
                    }
                    Err(e) => return Err(e),
                }
                if retry.is_empty() && resending == 0 {
                    release(&mut held, handler)?;
                }
            }
            _ = tokio::time::sleep_until(retry_at), if !retry.is_empty() && in_flight.is_empty() => {
                // A broker that restarted may have forgotten this producer's
                // identity and refuse it for good: send again as a new one.
                match producer.renewed() {
                    Ok(p) => producer = p,
                    Err(e) => tracing::warn!(stage = %settings.stage, error = %e,
                        "cannot renew the producer; sending again with the old one"),
                }
                retry.make_contiguous().sort_by(|a, b| a.key.cmp(&b.key));
                tracing::info!(stage = %settings.stage, messages = retry.len(), "sending failed outputs again");
                while let Some(mut f) = retry.pop_front() {
                    f.resent = true;
                    resending += 1;
                    in_flight.push_back(enqueue(&producer, f)?);
                }
            }
            _ = tick.tick() => {
                if last_health_check.elapsed() >= HEALTH_EVERY {
                    last_health_check = std::time::Instant::now();
                    check_health(consumer, &settings.stage);
                }
                // Only while the loop polls the consumer (a paused loop
                // would not see an assignment that came).
                let stuck = consumer.context().waiting_for_assignment().filter(|w| *w >= REJOIN_AFTER);
                if let Some(waited) = stuck.filter(|_| retry.is_empty() && resending == 0) {
                    // What is in flight is delivered (nothing lost); its
                    // offsets belong to whoever holds the partitions.
                    while let Some((f, result)) = in_flight.next().await {
                        if let Err(e) = result {
                            tracing::warn!(stage = %settings.stage, error = %e, topic = %f.key.0,
                                partition = f.key.1, offset = f.key.2,
                                "delivery failed while leaving a stuck group; the input is read again");
                        }
                    }
                    return Err(BusError::RebalanceStuck { waited });
                }
                match handler.on_tick().await {
                    Ok(out) => {
                        deliver_all(&mut producer, out, &settings.stage, metrics).await?;
                        release(&mut held, handler)?;
                    }
                    Err(e) => {
                        metrics.error(e.kind());
                        if e.policy() == Policy::Stop {
                            return Err(BusError::Fatal(e.to_string()));
                        }
                        tracing::warn!(stage = %settings.stage, kind = %e.kind(), error = %e, "flush tick failed");
                    }
                }
            }
            received = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT && retry.is_empty() && resending == 0 => {
                let borrowed = match received {
                    Ok(m) => m,
                    Err(e) => {
                        metrics.error(ErrorKind::Consume);
                        tracing::warn!(stage = %settings.stage, error = %e, "consume failed");
                        continue;
                    }
                };
                let msg = InMessage::from_borrowed(&borrowed);
                metrics.received(&msg.topic);
                let key = (msg.topic.clone(), msg.partition, msg.offset);
                let started = std::time::Instant::now();
                let mut backoff = settings.min_backoff;
                let decoded = msg.decode::<H::Input>();
                loop {
                    let result = match &decoded {
                        Ok((event, payload)) => {
                            let handled = handler.handle(Incoming { event, payload, msg: &msg });
                            // A panic is a bug, not a reason to stop for
                            // good: the message is dead-lettered with it.
                            match std::panic::AssertUnwindSafe(handled).catch_unwind().await {
                                Ok(result) => result,
                                Err(panic) => Err(HandleError::dead_letter(
                                    ErrorKind::Panic,
                                    format!("the {} stage panicked on this message: {}", settings.stage, panic_text(&*panic)),
                                )),
                            }
                        }
                        Err(e) => Err(HandleError::from(e.clone())),
                    };
                    let e = match result {
                        Ok(out) => {
                            let n = out.len();
                            in_flight.push_back(enqueue(&producer, flight(key, out))?);
                            metrics.sent_n(n as u64);
                            break;
                        }
                        Err(e) => e,
                    };
                    metrics.error(e.kind());
                    match e.policy() {
                        Policy::DeadLetter => {
                            metrics.dead_letter(e.kind());
                            let reason = e.to_string();
                            tracing::warn!(stage = %settings.stage, topic = %msg.topic,
                                partition = msg.partition, offset = msg.offset, kind = %e.kind(), %reason,
                                "message sent to the dead-letter topic");
                            let dl = dead_letter(&msg, &settings.stage, &settings.dead_letter_topic, &reason);
                            in_flight.push_back(enqueue(&producer, flight(key, vec![dl]))?);
                            break;
                        }
                        Policy::Retry => {
                            tracing::warn!(stage = %settings.stage, kind = %e.kind(), error = %e, ?backoff, "retrying message");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => {
                                    // Stored offsets end before this message: it comes again.
                                    while let Some((f, result)) = in_flight.next().await {
                                        if result.is_ok() && !f.resent {
                                            held.push(f.key);
                                        }
                                    }
                                    release(&mut held, handler)?;
                                    return Ok(());
                                }
                            }
                            backoff = (backoff * 2).min(settings.max_backoff);
                        }
                        Policy::Stop => return Err(BusError::Fatal(e.to_string())),
                    }
                }
                metrics.observe(started.elapsed());
            }
        }
    }
    Ok(())
}

/// How often the consume loop checks the broker for `/readyz`.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// Readiness: the broker answers a metadata request, and the consumer has
/// joined its group (its assignment, possibly empty when there are more
/// replicas than partitions, is known).
fn check_health(consumer: &BusConsumer, stage: &str) {
    let reachable =
        tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_millis(1500)));
    match (reachable, consumer.assignment()) {
        (Ok(_), Ok(assignment)) => {
            let partitions: Vec<String> = assignment
                .elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect();
            crate::health::ready(serde_json::json!({
                "stage": stage,
                "broker": "reachable",
                "partitions": partitions,
            }));
        }
        (Err(e), _) => crate::health::not_ready(format!("broker unreachable: {e}")),
        (_, Err(e)) => crate::health::not_ready(format!("consumer group not joined: {e}")),
    }
}

/// The message of a panic payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Stores the offset after `offset` for the next commit. A partition that a
/// rebalance took away while the message's outputs were in flight is no
/// longer this consumer's to commit (librdkafka answers "Erroneous state"):
/// its new owner reads on from the last committed offset, so the message is
/// handled again there (at-least-once), and this consumer goes on.
pub fn store_offset(
    consumer: &BusConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), BusError> {
    match consumer.store_offset(topic, partition, offset) {
        Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
            tracing::info!(
                topic,
                partition,
                offset,
                "partition reassigned while its outputs were in flight; its new owner handles it again"
            );
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Why a [`replay`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(
        "no message from {topic} for {idle:?} with partitions {partitions:?} not read to their end"
    )]
    Idle {
        topic: String,
        idle: Duration,
        partitions: Vec<i32>,
    },
    #[error(transparent)]
    Each(E),
}

/// Each partition of `topic` that holds messages, with its low and high
/// watermarks now.
fn watermarks<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>, BusError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut out = Vec::new();
    for p in metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            out.push((p, low, high));
        }
    }
    Ok(out)
}

/// The error of a read that waited `idle` for the partitions in `ends`.
fn idle_error<E: std::error::Error + 'static>(
    topic: &str,
    idle: Duration,
    ends: &std::collections::HashMap<i32, i64>,
) -> ReplayError<E> {
    let mut partitions: Vec<i32> = ends.keys().copied().collect();
    partitions.sort();
    ReplayError::Idle {
        topic: topic.to_string(),
        idle,
        partitions,
    }
}

/// Reads `topic` from its beginning to the end each partition had when the
/// call started, handing every message to `each` in partition order, in a
/// consumer group of its own that commits nothing. Returns how many
/// messages were read. A partition that yields nothing for `idle` before its
/// end is an error.
pub async fn replay<E: std::error::Error + 'static>(
    settings: &KafkaSettings,
    topic: &str,
    idle: Duration,
    mut each: impl AsyncFnMut(InMessage) -> Result<(), E>,
) -> Result<u64, ReplayError<E>> {
    let group = format!(
        "{}-replay-{}-{}",
        settings.client_id,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let consumer = consumer(settings, &group, &[topic], StartAt::Earliest)?;
    // The end of each partition now: the replay covers everything before it.
    let mut ends: std::collections::HashMap<i32, i64> = watermarks(&consumer, topic)?
        .into_iter()
        .map(|(p, _, high)| (p, high))
        .collect();
    let mut read = 0u64;
    while !ends.is_empty() {
        let m = match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(m) => m.map_err(BusError::from)?,
            Err(_) => return Err(idle_error(topic, idle, &ends)),
        };
        let msg = InMessage::from_borrowed(&m);
        let Some(&end) = ends.get(&msg.partition) else {
            continue;
        };
        if msg.offset >= end {
            ends.remove(&msg.partition);
            continue;
        }
        let (partition, offset) = (msg.partition, msg.offset);
        each(msg).await.map_err(ReplayError::Each)?;
        read += 1;
        if offset + 1 >= end {
            ends.remove(&partition);
        }
    }
    Ok(read)
}

/// Reads the newest `last` messages (at most) of each partition of `topic`,
/// as far as each partition reached when the call started, handing each to
/// `each` in offset order within its partition; joins no group and commits
/// nothing. Returns how many messages were read. A partition that yields
/// nothing for `idle` before its end is an error.
pub async fn read_tail(
    settings: &KafkaSettings,
    topic: &str,
    last: i64,
    idle: Duration,
    mut each: impl FnMut(InMessage),
) -> Result<u64, ReplayError<std::convert::Infallible>> {
    let mut cfg = settings.base();
    cfg.set(
        "group.id",
        format!("{}-tail-{}", settings.client_id, std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("fetch.wait.max.ms", "20")
    .set("fetch.message.max.bytes", "2097152");
    let consumer: StreamConsumer =
        settings
            .finish(cfg)
            .create()
            .map_err(|source| BusError::Client {
                what: "consumer",
                brokers: settings.brokers.clone(),
                source,
            })?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    for (p, low, high) in watermarks(&consumer, topic)? {
        ends.insert(p, high);
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Offset(low.max(high - last)))
            .map_err(BusError::from)?;
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment).map_err(BusError::from)?;
    let mut read = 0u64;
    while !ends.is_empty() {
        let m = match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(m) => m.map_err(BusError::from)?,
            Err(_) => return Err(idle_error(topic, idle, &ends)),
        };
        let msg = InMessage::from_borrowed(&m);
        let Some(&end) = ends.get(&msg.partition) else {
            continue;
        };
        if msg.offset + 1 >= end {
            ends.remove(&msg.partition);
        }
        if msg.offset < end {
            each(msg);
            read += 1;
        }
    }
    Ok(read)
}

/// Produces all messages (in order) and waits for every acknowledgement.
/// Produces `out` and waits for every acknowledgement; what fails is sent
/// again by a renewed producer (see [`run_stage`]) for [`REDELIVER_FOR`].
async fn deliver_all(
    producer: &mut Producer,
    out: Vec<OutMessage>,
    stage: &str,
    metrics: &StageMetrics,
) -> Result<(), BusError> {
    let started = std::time::Instant::now();
    let mut out = out;
    loop {
        let mut pending = FuturesOrdered::new();
        for m in out {
            let ack = producer.send(&m);
            pending.push_back(async move {
                match ack {
                    Ok(ack) => (m, ack.await.map(|_| ())),
                    Err(e) => (m, Err(e)),
                }
            });
        }
        let mut failed = Vec::new();
        let mut last = None;
        while let Some((m, result)) = pending.next().await {
            match result {
                Ok(()) => {}
                Err(e @ BusError::TooLarge { .. }) => return Err(e),
                Err(e) => {
                    failed.push(m);
                    last = Some(e);
                }
            }
        }
        let Some(e) = last else { return Ok(()) };
        if started.elapsed() >= REDELIVER_FOR {
            return Err(e);
        }
        metrics.error(ErrorKind::Produce);
        tracing::warn!(stage, error = %e, messages = failed.len(), "delivery failed; sending it again");
        tokio::time::sleep(REDELIVER_AFTER).await;
        match producer.renewed() {
            Ok(p) => *producer = p,
            Err(e) => {
                tracing::warn!(stage, error = %e, "cannot renew the producer; sending again with the old one")
            }
        }
        out = failed;
    }
}

/// Bytes of a message's payload a dead letter keeps at most: the copy must
/// fit under the producer's limit whatever arrived (the rest is named by
/// the [`DLQ_TRUNCATED`] header).
pub const DEAD_LETTER_KEEPS: usize = 64 * 1024;

/// Dead letters: the original payload's size, when the copy keeps only its
/// first [`DEAD_LETTER_KEEPS`] bytes.
pub const DLQ_TRUNCATED: &str = "mm-dlq-truncated-from";

/// The dead-letter copy of `msg`: same key and payload (its first
/// [`DEAD_LETTER_KEEPS`] bytes when it is over the message limit), its
/// original headers, and the reason, stage and origin added.
pub fn dead_letter(msg: &InMessage, stage: &str, topic: &str, reason: &str) -> OutMessage {
    // Room for the headers a dead letter adds.
    let over = msg.payload.len() + 4096 > mouthmap_contracts::MAX_MESSAGE_BYTES;
    let kept = if over {
        &msg.payload[..DEAD_LETTER_KEEPS]
    } else {
        &msg.payload[..]
    };
    let mut out = OutMessage::new(topic, msg.key_str().unwrap_or_default(), kept.to_vec());
    out.headers = msg.headers.clone();
    if over {
        out = out.header(DLQ_TRUNCATED, msg.payload.len().to_string());
    }
    out.header(headers::DLQ_REASON, reason)
        .header(headers::DLQ_STAGE, stage)
        .header(headers::DLQ_TOPIC, &msg.topic)
        .header(headers::DLQ_PARTITION, msg.partition.to_string())
        .header(headers::DLQ_OFFSET, msg.offset.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_timeout_is_the_default_unless_an_option_sets_it() {
        let mut s = KafkaSettings::new("localhost:9092", "t");
        assert_eq!(s.session_timeout(), SESSION_TIMEOUT);
        s.options
            .push(("session.timeout.ms".into(), "30000".into()));
        assert_eq!(s.session_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn a_dead_letter_of_a_huge_message_keeps_its_head_and_its_size() {
        let msg = InMessage {
            topic: "frames".into(),
            partition: 0,
            offset: 1,
            key: Some(b"cam-1".to_vec()),
            payload: vec![7u8; 10 << 20],
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let dl = dead_letter(&msg, "preprocess", "dead-letters", "too large");
        assert_eq!(dl.payload.len(), DEAD_LETTER_KEEPS);
        assert!(
            dl.headers
                .iter()
                .any(|(k, v)| k == DLQ_TRUNCATED && v == b"10485760")
        );
    }

    #[test]
    fn dead_letter_keeps_the_message_and_says_why() {
        let msg = InMessage {
            topic: "frames".into(),
            partition: 2,
            offset: 41,
            key: Some(b"cam-1".to_vec()),
            payload: b"garbage".to_vec(),
            headers: vec![("traceparent".into(), b"00-abc".to_vec())],
            timestamp_ms: Some(1),
        };
        let dl = dead_letter(&msg, "preprocess", "dead-letters", "bad magic");
        assert_eq!(dl.topic, "dead-letters");
        assert_eq!(dl.key, "cam-1");
        assert_eq!(dl.payload, b"garbage");
        let get = |k: &str| {
            dl.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(get(headers::DLQ_REASON).as_deref(), Some("bad magic"));
        assert_eq!(get(headers::DLQ_STAGE).as_deref(), Some("preprocess"));
        assert_eq!(get(headers::DLQ_OFFSET).as_deref(), Some("41"));
        assert_eq!(get("traceparent").as_deref(), Some("00-abc"));
    }

    #[test]
    fn producer_refuses_oversized_messages_before_sending() {
        let p = Producer::new(&KafkaSettings::new("127.0.0.1:1", "t")).unwrap();
        let err = p
            .send(&OutMessage::new("t", "k", vec![0; 1_000_001]))
            .err()
            .unwrap();
        assert!(matches!(err, BusError::TooLarge { .. }), "{err}");
    }
}
