//! What a user names as a source, and what it means.

use std::path::{Path, PathBuf};

use mouthmap_contracts::SourceKind;

/// Why a source cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error(
        "{0}: no such file (give a path to a video file, or a rtmp://, rtsp://, http(s)://, file:// or v4l2:// URI)"
    )]
    NotFound(PathBuf),
    #[error("{0}: is a directory, not a video file")]
    IsDirectory(PathBuf),
    #[error("{0}: is not a regular file (a FIFO or a device cannot be ingested as a file)")]
    NotRegular(PathBuf),
    #[error(
        "{0:?} is not a URI MouthMap can read: use file://, rtmp(s)://, rtsp(s)://, http(s)://, v4l2:///dev/videoN or a file path"
    )]
    UnsupportedScheme(String),
    #[error("{0:?} is not a valid URI: {1}")]
    BadUri(String, String),
}

/// A parsed source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What GStreamer opens: a URI for network and file sources, a device
    /// path for cameras.
    pub location: String,
    pub kind: SourceKind,
    /// An HTTP source may follow redirects (off for sources an API caller
    /// named: a redirect could lead to an internal address).
    pub follow_redirects: bool,
}

impl Source {
    /// Parses a file path or URI. Files must exist.
    pub fn parse(text: &str) -> Result<Self, SourceError> {
        let text = text.trim();
        if let Some((scheme, _)) = text.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            let kind = match scheme.as_str() {
                "file" => {
                    let url = url::Url::parse(text)
                        .map_err(|e| SourceError::BadUri(text.into(), e.to_string()))?;
                    let path = url
                        .to_file_path()
                        .map_err(|_| SourceError::BadUri(text.into(), "not a local path".into()))?;
                    return Self::file(&path);
                }
                "rtmp" | "rtmps" => SourceKind::Rtmp,
                "rtsp" | "rtsps" | "rtspt" => SourceKind::Rtsp,
                "http" | "https" => SourceKind::Http,
                "v4l2" => {
                    let device = &text["v4l2://".len()..];
                    return Ok(Self {
                        location: device.to_string(),
                        kind: SourceKind::Camera,
                        follow_redirects: true,
                    });
                }
                _ => return Err(SourceError::UnsupportedScheme(text.into())),
            };
            url::Url::parse(text).map_err(|e| SourceError::BadUri(text.into(), e.to_string()))?;
            return Ok(Self {
                location: text.to_string(),
                kind,
                follow_redirects: true,
            });
        }
        if text.starts_with("/dev/video") {
            return Ok(Self {
                location: text.to_string(),
                kind: SourceKind::Camera,
                follow_redirects: true,
            });
        }
        Self::file(Path::new(text))
    }

    fn file(path: &Path) -> Result<Self, SourceError> {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let meta = std::fs::metadata(&abs).map_err(|_| SourceError::NotFound(abs.clone()))?;
        if meta.is_dir() {
            return Err(SourceError::IsDirectory(abs));
        }
        if !meta.is_file() {
            return Err(SourceError::NotRegular(abs));
        }
        let uri = url::Url::from_file_path(&abs)
            .map_err(|_| SourceError::BadUri(abs.display().to_string(), "not absolute".into()))?;
        Ok(Self {
            location: uri.to_string(),
            kind: SourceKind::File,
            follow_redirects: true,
        })
    }

    /// The host a network source connects to (None for files and cameras).
    pub fn host(&self) -> Option<(String, u16)> {
        if matches!(self.kind, SourceKind::File | SourceKind::Camera) {
            return None;
        }
        let u = url::Url::parse(&self.location).ok()?;
        let port = u.port_or_known_default().unwrap_or(match self.kind {
            SourceKind::Rtmp => 1935,
            SourceKind::Rtsp => 554,
            _ => 80,
        });
        Some((u.host_str()?.trim_matches(['[', ']']).to_string(), port))
    }

    /// Live sources can drop and come back; files cannot.
    pub fn is_live(&self) -> bool {
        !matches!(self.kind, SourceKind::File)
    }

    /// The location with credentials and query removed, safe for logs and events.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.location) {
            Ok(mut u) if self.kind != SourceKind::Camera => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
            _ => self.location.clone(),
        }
    }

    /// A default stream id: the file stem or last path segment, cleaned.
    pub fn default_stream_id(&self) -> String {
        let tail = self
            .redacted()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("stream")
            .to_string();
        let stem = match self.kind {
            SourceKind::File => tail
                .rsplit_once('.')
                .map_or(tail.clone(), |(s, _)| s.to_string()),
            _ => tail,
        };
        let clean: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(100)
            .collect();
        if clean.is_empty() {
            "stream".into()
        } else {
            clean
        }
    }
}

/// Makes a FIFO at `path` (for tests of what is not a regular file).
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_uris() {
        let s = Source::parse("rtmp://user:pw@127.0.0.1:1935/live/abc?key=secret").unwrap();
        assert_eq!(s.kind, SourceKind::Rtmp);
        assert_eq!(s.redacted(), "rtmp://127.0.0.1:1935/live/abc");
        assert_eq!(s.default_stream_id(), "abc");
        assert!(s.is_live());
        assert_eq!(
            Source::parse("rtsp://cam/stream1").unwrap().kind,
            SourceKind::Rtsp
        );
        assert_eq!(
            Source::parse("https://x/y.mp4").unwrap().kind,
            SourceKind::Http
        );
        let cam = Source::parse("v4l2:///dev/video2").unwrap();
        assert_eq!(
            (cam.kind, cam.location.as_str()),
            (SourceKind::Camera, "/dev/video2")
        );
        assert_eq!(
            Source::parse("/dev/video0").unwrap().kind,
            SourceKind::Camera
        );
    }

    #[test]
    fn a_fifo_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        make_fifo(&fifo);
        assert!(matches!(
            Source::parse(fifo.to_str().unwrap()),
            Err(SourceError::NotRegular(_))
        ));
    }

    #[test]
    fn files_must_exist_and_become_file_uris() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bbaf2n.mp4");
        std::fs::write(&f, b"x").unwrap();
        let s = Source::parse(f.to_str().unwrap()).unwrap();
        assert_eq!(s.kind, SourceKind::File);
        assert!(s.location.starts_with("file:///"));
        assert_eq!(s.default_stream_id(), "bbaf2n");
        assert!(!s.is_live());
        assert_eq!(Source::parse(&s.location).unwrap(), s);
        assert!(matches!(
            Source::parse(dir.path().join("nope.mp4").to_str().unwrap()),
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(
            Source::parse(dir.path().to_str().unwrap()),
            Err(SourceError::IsDirectory(_))
        ));
        assert!(matches!(
            Source::parse("gopher://x/y"),
            Err(SourceError::UnsupportedScheme(_))
        ));
    }
}
