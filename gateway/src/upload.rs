//! One uploaded video: saved whole (within the size limit, checked to be a
//! video by its first bytes), ingested through ingest's stream code, and
//! followed on the hub until its final.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Multipart;
use futures::StreamExt;
use mouthmap_contracts::{EndReason, Transcript, TranscriptKind};
use mouthmap_feature_store::online::{OnlineStore, Row};
use mouthmap_feature_store::value::Value;
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::hub::{Hub, HubEvent};
use crate::intake::{Admission, Intake};

/// Upload settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes an upload may have at most.
    pub max_bytes: u64,
    /// How long after ingest finished reading the file its final may take.
    pub final_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 200 * 1024 * 1024,
            final_wait: Duration::from_secs(60),
        }
    }
}

/// Why an upload gave no transcript.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the upload is over {limit} bytes, the gateway's limit (--max-upload-bytes): send a shorter video, or stream it over gRPC"
    )]
    TooLarge { limit: u64 },
    #[error("the upload is empty: send a video file as the body, or as the multipart field `file`")]
    Empty,
    #[error(
        "{what} is not a video this gateway reads (MP4/MOV, Matroska/WebM, AVI, FLV, MPEG-PS/TS, Ogg): {hint}"
    )]
    NotVideo { what: String, hint: &'static str },
    #[error("the multipart form has no field `file`: send the video as `-F file=@clip.mp4`")]
    NoFileField,
    #[error("the multipart form could not be read: {0}")]
    Multipart(String),
    #[error("{0}")]
    BadId(String),
    #[error("the video could not be decoded: {0}")]
    Undecodable(String),
    #[error(
        "no final transcript {waited:?} after the video was read: the pipeline is behind or a stage is down (see /readyz of each stage)"
    )]
    NoFinal { waited: Duration },
    #[error("cannot set the stream's grammar: {0}")]
    Grammar(String),
    #[error("cannot write the upload to the spool folder: {0}")]
    Spool(std::io::Error),
    #[error("cannot start ingesting the upload: {0}")]
    Start(String),
}

/// The stream id an upload runs as: the caller's (checked) or a new one.
pub fn stream_id(given: Option<&str>) -> Result<String, UploadError> {
    match given {
        Some(id) => {
            mouthmap_contracts::validate_stream_id(id)
                .map_err(|e| UploadError::BadId(e.to_string()))?;
            Ok(id.to_string())
        }
        None => Ok(format!("upload-{:016x}", rand::random::<u64>())),
    }
}

/// What a file's first bytes say it is: a video container, or why not.
pub fn sniff(head: &[u8]) -> Result<&'static str, UploadError> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let kind =
        if at(4, b"ftyp") || at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") || at(4, b"free") {
            Some("mp4")
        } else if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
            Some("matroska")
        } else if at(0, b"RIFF") && at(8, b"AVI ") {
            Some("avi")
        } else if at(0, b"FLV") {
            Some("flv")
        } else if at(0, &[0, 0, 1, 0xba]) || at(0, &[0, 0, 1, 0xb3]) {
            Some("mpeg")
        } else if head.first() == Some(&0x47) && head.get(188) == Some(&0x47) {
            Some("mpeg-ts")
        } else if at(0, b"OggS") {
            Some("ogg")
        } else {
            None
        };
    kind.ok_or_else(|| {
        let text = head
            .iter()
            .take(64)
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        UploadError::NotVideo {
            what: if text {
                "the upload is text".to_string()
            } else {
                format!("a file starting {:02x?}", &head[..head.len().min(8)])
            },
            hint: "send the video file itself",
        }
    })
}

/// An upload on disk, checked to be a video.
pub struct Saved {
    pub file: NamedTempFile,
    pub bytes: u64,
    pub container: &'static str,
}

/// Writes chunks to a new file in `spool`, within the limit; checks the
/// first bytes.
async fn save<S, E>(mut chunks: S, spool: &Path, limits: &Limits) -> Result<Saved, UploadError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    std::fs::create_dir_all(spool).map_err(UploadError::Spool)?;
    let file = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(spool)
        .map_err(UploadError::Spool)?;
    let mut out = tokio::fs::File::from_std(file.reopen().map_err(UploadError::Spool)?);
    let mut bytes = 0u64;
    let mut head = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| UploadError::Multipart(e.to_string()))?;
        bytes += chunk.len() as u64;
        if bytes > limits.max_bytes {
            return Err(UploadError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        if head.len() < 256 {
            head.extend_from_slice(&chunk[..chunk.len().min(256 - head.len())]);
        }
        out.write_all(&chunk).await.map_err(UploadError::Spool)?;
    }
    out.flush().await.map_err(UploadError::Spool)?;
    if bytes == 0 {
        return Err(UploadError::Empty);
    }
    let container = sniff(&head)?;
    Ok(Saved {
        file,
        bytes,
        container,
    })
}

/// An upload sent as the request body.
pub async fn save_body(body: Body, spool: &Path, limits: &Limits) -> Result<Saved, UploadError> {
    save(body.into_data_stream(), spool, limits).await
}

/// An upload sent as the multipart field `file`.
pub async fn save_multipart(
    mut form: Multipart,
    spool: &Path,
    limits: &Limits,
) -> Result<Saved, UploadError> {
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| UploadError::Multipart(e.body_text()))?
    {
        if field.name() == Some("file") {
            return save(Box::pin(field), spool, limits).await;
        }
    }
    Err(UploadError::NoFileField)
}

/// Sets the stream's `grammar` feature, which the decoder reads.
pub async fn set_grammar(
    store: Option<&OnlineStore>,
    id: &str,
    grammar: &str,
) -> Result<(), UploadError> {
    let Some(store) = store else {
        return Err(UploadError::Grammar(
            "the gateway has no feature store: start it with --redis-url".into(),
        ));
    };
    let view = store
        .registry()
        .view_with_field("stream", "grammar")
        .map_err(|e| UploadError::Grammar(e.to_string()))?;
    let ty = view
        .field_type("grammar")
        .map_err(|e| UploadError::Grammar(e.to_string()))?;
    let value = Value::parse(ty, grammar)
        .ok_or_else(|| UploadError::Grammar(format!("{grammar:?} is not a grammar name")))?;
    let row: Row = [("grammar".to_string(), value)].into_iter().collect();
    let name = view.name.clone();
    store
        .write(&name, id, &row)
        .await
        .map_err(|e| UploadError::Grammar(e.to_string()))
}

/// An upload being transcribed.
pub struct Upload {
    id: String,
    hub: Hub,
    intake: Intake,
    events: broadcast::Receiver<HubEvent>,
    _file: NamedTempFile,
    _admission: Admission,
    done: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            // The caller went away: nothing more to read for anyone.
            self.intake.stop(&self.id);
        }
    }
}

impl Upload {
    /// Starts ingesting the saved file (watching the hub first, so no
    /// transcript is missed).
    pub fn start(
        hub: &Hub,
        intake: &Intake,
        id: &str,
        saved: Saved,
        admission: Admission,
    ) -> Result<Self, UploadError> {
        let events = hub.subscribe();
        intake
            .start_file(id, saved.file.path())
            .map_err(|e| UploadError::Start(e.to_string()))?;
        tracing::info!(
            stream_id = id,
            bytes = saved.bytes,
            container = saved.container,
            "upload started"
        );
        Ok(Self {
            id: id.to_string(),
            hub: hub.clone(),
            intake: intake.clone(),
            events,
            _file: saved.file,
            _admission: admission,
            done: false,
        })
    }

    /// The next transcript of this stream, or why none will come.
    async fn next(
        &mut self,
        limits: &Limits,
        read_at: &mut Option<Instant>,
    ) -> Result<Transcript, UploadError> {
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                e = self.events.recv() => match e {
                    Ok(HubEvent::Transcript(t)) if t.stream_id == self.id => return Ok((*t).clone()),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(t) = self.hub.view(&self.id).and_then(|v| v.transcript)
                            && t.kind == TranscriptKind::Final
                        {
                            return Ok(t);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(UploadError::Start("the gateway is shutting down".into()));
                    }
                },
                _ = check.tick() => {
                    if let Some(end) = self.intake.status(&self.id).and_then(|s| s.end) {
                        if end.reason == EndReason::Error && end.frames == 0 {
                            return Err(UploadError::Undecodable(
                                end.error.unwrap_or_else(|| "no frame could be read".into()),
                            ));
                        }
                        let at = *read_at.get_or_insert_with(Instant::now);
                        if at.elapsed() > limits.final_wait {
                            return Err(UploadError::NoFinal { waited: limits.final_wait });
                        }
                    }
                }
            }
        }
    }

    /// Waits for the final transcript.
    pub async fn final_transcript(mut self, limits: &Limits) -> Result<Transcript, UploadError> {
        let mut read_at = None;
        loop {
            let t = self.next(limits, &mut read_at).await?;
            if t.kind == TranscriptKind::Final {
                self.done = true;
                return Ok(t);
            }
        }
    }

    /// Hands every transcript to `send` (partials, then the final) until the
    /// final, or until `send` says the caller is gone.
    pub async fn each_transcript<F, Fut>(
        mut self,
        limits: &Limits,
        send: F,
    ) -> Result<(), UploadError>
    where
        F: Fn(&Transcript) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut read_at = None;
        loop {
            let t = self.next(limits, &mut read_at).await?;
            if !send(&t).await {
                return Ok(());
            }
            if t.kind == TranscriptKind::Final {
                self.done = true;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_told_by_their_first_bytes() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        assert_eq!(sniff(&mp4).unwrap(), "mp4");
        assert_eq!(sniff(&[0x1a, 0x45, 0xdf, 0xa3, 1]).unwrap(), "matroska");
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST").unwrap(), "avi");
        assert_eq!(sniff(&[0, 0, 1, 0xba, 0x44]).unwrap(), "mpeg");
        let e = sniff(b"hello, this is not a video\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("text"), "{e}");
        assert!(sniff(&[0x89, b'P', b'N', b'G']).is_err());
    }

    #[test]
    fn stream_ids_are_checked_or_made() {
        assert!(stream_id(Some("ok-id_1")).is_ok());
        assert!(stream_id(Some("no spaces")).is_err());
        assert!(stream_id(None).unwrap().starts_with("upload-"));
    }
}
