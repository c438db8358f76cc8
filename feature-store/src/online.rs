//! The online store: one Redis hash per feature view and entity key
//! (`{prefix}:{view}:{key}`), expiring after the view's TTL from its last
//! write. Reads of several views go out as one pipeline: one round trip.
//!
//! The connection is made lazily and made again after a failure, so a
//! service starts and keeps running while Redis is down; every call fails
//! fast then (a failed connect is not retried for `retry_pause`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::FeatureError;
use crate::registry::Registry;
use crate::value::Value;

/// One view's fields for one entity key.
pub type Row = BTreeMap<String, Value>;

/// Settings of the connection to Redis.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix, so several deployments can share one Redis.
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// After a failed connect, calls fail at once for this long.
    pub retry_pause: Duration,
}

impl StoreSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "mm:fs".into(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            retry_pause: Duration::from_millis(250),
        }
    }
}

struct Conn {
    /// The connection in use, and which one it is (counted up per connect).
    current: Option<(u64, MultiplexedConnection)>,
    made: u64,
    failed_at: Option<Instant>,
}

/// The Redis online store. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct OnlineStore {
    registry: Arc<Registry>,
    client: redis::Client,
    settings: StoreSettings,
    conn: Arc<tokio::sync::Mutex<Conn>>,
}

/// `text` with the user and password of every `scheme://user:pass@host`
/// in it replaced by `***`: secrets never reach a log, an error or a topic.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

impl OnlineStore {
    pub fn new(settings: StoreSettings, registry: Arc<Registry>) -> Result<Self, FeatureError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| {
            FeatureError::Declarations(format!(
                "Redis URL {:?} is not valid ({}); write it as redis://[:PASSWORD@]HOST:PORT/DB",
                redact_url(&settings.url),
                redact_url(&e.to_string())
            ))
        })?;
        Ok(Self {
            registry,
            client,
            settings,
            conn: Arc::new(tokio::sync::Mutex::new(Conn {
                current: None,
                made: 0,
                failed_at: None,
            })),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store's Redis URL with any user and password removed (for
    /// logs and errors).
    pub fn url(&self) -> String {
        redact_url(&self.settings.url)
    }

    /// How long calls fail at once after a failed connect: a retry sooner
    /// is refused without trying.
    pub fn retry_pause(&self) -> Duration {
        self.settings.retry_pause
    }

    /// The Redis key of a view's hash for one entity key.
    pub fn key(&self, view: &str, entity_key: &str) -> String {
        format!("{}:{view}:{entity_key}", self.settings.prefix)
    }

    fn contributions_key(&self, view: &str, entity_key: &str) -> String {
        format!("{}:_parts:{view}:{entity_key}", self.settings.prefix)
    }

    /// The connection (made now if there is none) and its number.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), FeatureError> {
        let mut c = self.conn.lock().await;
        if let Some((n, conn)) = &c.current {
            return Ok((*n, conn.clone()));
        }
        if let Some(t) = c.failed_at
            && t.elapsed() < self.settings.retry_pause
        {
            return Err(FeatureError::Unavailable(format!(
                "Redis at {} is unreachable (retrying)",
                self.url()
            )));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                if c.failed_at.take().is_some() {
                    tracing::info!(url = %self.url(), "Redis reachable again");
                }
                c.made += 1;
                c.current = Some((c.made, conn.clone()));
                Ok((c.made, conn))
            }
            Err(e) => {
                c.failed_at = Some(Instant::now());
                Err(self.unavailable(&e))
            }
        }
    }

    fn unavailable(&self, e: &redis::RedisError) -> FeatureError {
        // The client's own text can quote the URL it was opened with.
        FeatureError::Unavailable(redact_url(&format!("Redis at {}: {e}", self.url())))
    }

    /// Runs a pipeline; a connection-level failure drops the connection so
    /// the next call makes a new one.
    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, FeatureError> {
        let (n, mut conn) = self.connection().await?;
        match pipe.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    // Only the connection that failed is dropped: another
                    // call may already have made a new one, which stays.
                    let mut c = self.conn.lock().await;
                    if c.current.as_ref().is_some_and(|(current, _)| *current == n) {
                        c.current = None;
                        c.failed_at = Some(Instant::now());
                    }
                }
                Err(self.unavailable(&e))
            }
        }
    }

    /// Writes some fields of a view for one entity key, checked against the
    /// declarations, and (re)starts the view's TTL. Atomic.
    pub async fn write(
        &self,
        view: &str,
        entity_key: &str,
        values: &Row,
    ) -> Result<(), FeatureError> {
        let decl = self.registry.view(view)?;
        decl.check(values)?;
        check_key(entity_key)?;
        if values.is_empty() {
            return Ok(());
        }
        let key = self.key(view, entity_key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let hset = pipe.cmd("HSET").arg(&key);
        for (field, value) in values {
            hset.arg(field).arg(value.encode());
        }
        pipe.ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(decl.ttl.as_millis() as u64)
            .ignore();
        self.run::<()>(&pipe).await
    }

    /// Removes fields of a view (all of it when `fields` is empty).
    pub async fn remove(
        &self,
        view: &str,
        entity_key: &str,
        fields: &[String],
    ) -> Result<(), FeatureError> {
        let decl = self.registry.view(view)?;
        for f in fields {
            decl.field_type(f)?;
        }
        let key = self.key(view, entity_key);
        let mut pipe = redis::pipe();
        if fields.is_empty() {
            pipe.cmd("DEL").arg(&key).ignore();
        } else {
            pipe.cmd("HDEL").arg(&key).arg(fields).ignore();
        }
        self.run::<()>(&pipe).await
    }

    /// Reads views for entity keys, all in one round trip; None where
    /// nothing is stored (never written, or expired).
    pub async fn read(&self, lookups: &[(&str, &str)]) -> Result<Vec<Option<Row>>, FeatureError> {
        let mut pipe = redis::pipe();
        for (view, entity_key) in lookups {
            self.registry.view(view)?;
            pipe.cmd("HGETALL").arg(self.key(view, entity_key));
        }
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<HashMap<String, String>> = self.run(&pipe).await?;
        lookups
            .iter()
            .zip(raw)
            .map(|((view, key), fields)| self.decode(view, key, fields))
            .collect()
    }

    fn decode(
        &self,
        view: &str,
        entity_key: &str,
        fields: HashMap<String, String>,
    ) -> Result<Option<Row>, FeatureError> {
        if fields.is_empty() {
            return Ok(None);
        }
        let decl = self.registry.view(view)?;
        let mut row = Row::new();
        for (field, text) in fields {
            // A field no longer declared (an older deployment wrote it) is skipped.
            let Ok(ty) = decl.field_type(&field) else {
                tracing::debug!(
                    view,
                    entity_key,
                    field,
                    "stored field is not declared; skipped"
                );
                continue;
            };
            let value = Value::parse(ty, &text).ok_or_else(|| FeatureError::BadStored {
                key: self.key(view, entity_key),
                field: field.clone(),
                expected: ty,
                text: text.clone(),
            })?;
            row.insert(field, value);
        }
        Ok(Some(row))
    }

    /// Entity keys that have the view stored.
    pub async fn keys(&self, view: &str) -> Result<Vec<String>, FeatureError> {
        self.registry.view(view)?;
        let prefix = self.key(view, "");
        let mut out: Vec<String> = self
            .scan(&format!("{prefix}*"))
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>, FeatureError> {
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500);
            let ((next, batch),): ((u64, Vec<String>),) = self.run(&pipe).await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Deletes every stored row of a view (and its contributions): the
    /// first step of a rebuild. Returns how many keys went.
    pub async fn clear_view(&self, view: &str) -> Result<u64, FeatureError> {
        self.registry.view(view)?;
        let mut keys = self.scan(&format!("{}*", self.key(view, ""))).await?;
        keys.extend(
            self.scan(&format!("{}*", self.contributions_key(view, "")))
                .await?,
        );
        let mut deleted = 0;
        for part in keys.chunks(500) {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(part);
            let (n,): (u64,) = self.run(&pipe).await?;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Records one member's contribution to an aggregate view (for example
    /// one stream's words toward its speaker's totals) and returns all the
    /// contributions recorded for that entity key. Idempotent: a replayed
    /// contribution replaces itself. Expires with the view's TTL.
    pub async fn contribute(
        &self,
        view: &str,
        entity_key: &str,
        member: &str,
        contribution: &str,
    ) -> Result<BTreeMap<String, String>, FeatureError> {
        let decl = self.registry.view(view)?;
        check_key(entity_key)?;
        let key = self.contributions_key(view, entity_key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(member)
            .arg(contribution)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(decl.ttl.as_millis() as u64)
            .ignore()
            .cmd("HGETALL")
            .arg(&key);
        let (all,): (HashMap<String, String>,) = self.run(&pipe).await?;
        Ok(all.into_iter().collect())
    }

    /// Connects (if not yet) and checks Redis answers: a reader calls it at
    /// startup so its first lookup does not pay for the connection.
    pub async fn ping(&self) -> Result<(), FeatureError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let (_pong,): (String,) = self.run(&pipe).await?;
        Ok(())
    }

    /// Remaining time to live of a stored row.
    pub async fn ttl(
        &self,
        view: &str,
        entity_key: &str,
    ) -> Result<Option<Duration>, FeatureError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL").arg(self.key(view, entity_key));
        let (ms,): (i64,) = self.run(&pipe).await?;
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
    }
}

fn check_key(key: &str) -> Result<(), FeatureError> {
    if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control() || c == '*') {
        return Err(FeatureError::BadKey(key.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_are_taken_out_of_urls() {
        assert_eq!(
            redact_url("redis://:hunter2@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(
            redact_url("Redis at redis://u:p@h/0: refused"),
            "Redis at redis://***@h/0: refused"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("a redis://x@y b rediss://c:d@e"),
            "a redis://***@y b rediss://***@e"
        );
    }
}
