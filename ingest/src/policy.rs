//! Which sources a caller of the HTTP API may name.
//!
//! The command line is the operator's: it may ingest any path, device or
//! address. The API faces whoever can reach it, so by default it refuses
//! what would let a caller read the server's files or reach its network:
//! files outside a media root (and anything that is not a regular file),
//! cameras, and network sources whose host resolves to a loopback, private,
//! link-local or otherwise internal address. Refusals say what was wrong
//! without saying what exists on the server (no "no such file", no
//! connection errors), so the API cannot be used as a scanner.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::PathBuf;

use mouthmap_contracts::SourceKind;

use crate::source::Source;

/// What API callers may ingest.
#[derive(Debug, Clone, Default)]
pub struct SourcePolicy {
    /// Files under this folder (regular files only) may be ingested; none
    /// when unset.
    pub media_root: Option<PathBuf>,
    /// Cameras (`v4l2://`, `/dev/video*`) may be opened.
    pub allow_devices: bool,
    /// Network sources may resolve to loopback, private, link-local and
    /// other internal addresses (and HTTP sources may follow redirects).
    pub allow_private_networks: bool,
}

/// Why a caller's source was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{0}")]
    Unparsable(String),
    #[error(
        "file sources are refused: name a regular file under the ingest's media root (--media-root), by its path relative to it"
    )]
    File,
    #[error("camera sources are refused through the API (--allow-devices enables them)")]
    Device,
    #[error(
        "network source refused: its host must resolve to public addresses only (--allow-private-sources enables internal ones)"
    )]
    Internal,
    #[error("network source refused: its host does not resolve")]
    Unresolved,
}

/// True for addresses a caller must not make the server connect to.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                    || v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)
            }
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata services
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240
}

impl SourcePolicy {
    /// The source a caller named, if the policy allows it. Resolves network
    /// hosts (blocking: call it off the async runtime).
    pub fn check(&self, text: &str) -> Result<Source, PolicyError> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let is_file = lower.starts_with("file://") || !text.contains("://");
        if is_file && !lower.starts_with("/dev/video") {
            return self.file(text);
        }
        let mut source = Source::parse(text).map_err(|e| PolicyError::Unparsable(e.to_string()))?;
        // A redirect is not checked: an API caller's HTTP source follows none.
        source.follow_redirects = self.allow_private_networks;
        match source.kind {
            SourceKind::File => Err(PolicyError::File),
            SourceKind::Camera if self.allow_devices => Ok(source),
            SourceKind::Camera => Err(PolicyError::Device),
            _ if self.allow_private_networks => Ok(source),
            _ => {
                let (host, port) = source.host().ok_or(PolicyError::Unresolved)?;
                let addrs: Vec<IpAddr> = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|_| PolicyError::Unresolved)?
                    .map(|a| a.ip())
                    .collect();
                if addrs.is_empty() {
                    return Err(PolicyError::Unresolved);
                }
                if addrs.into_iter().any(is_internal) {
                    return Err(PolicyError::Internal);
                }
                Ok(source)
            }
        }
    }

    /// A file under the media root: relative paths are taken from it; the
    /// resolved path (links followed) must stay inside it and be a regular
    /// file. Every refusal reads the same, existing file or not.
    fn file(&self, text: &str) -> Result<Source, PolicyError> {
        let root = self.media_root.as_ref().ok_or(PolicyError::File)?;
        let root = root.canonicalize().map_err(|_| PolicyError::File)?;
        let path = match text.strip_prefix("file://") {
            Some(_) => url::Url::parse(text)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or(PolicyError::File)?,
            None => PathBuf::from(text),
        };
        let path = if path.is_absolute() {
            path
        } else {
            root.join(path)
        };
        let real = path.canonicalize().map_err(|_| PolicyError::File)?;
        let regular = std::fs::metadata(&real).is_ok_and(|m| m.is_file());
        if !real.starts_with(&root) || !regular {
            return Err(PolicyError::File);
        }
        Source::parse(&real.to_string_lossy()).map_err(|_| PolicyError::File)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn files_only_under_the_media_root_and_only_regular_ones() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("clip.mp4"), b"x").unwrap();
        let p = SourcePolicy {
            media_root: Some(root.path().to_path_buf()),
            ..SourcePolicy::default()
        };
        assert_eq!(p.check("clip.mp4").unwrap().kind, SourceKind::File);
        let abs = root.path().join("clip.mp4");
        assert!(p.check(abs.to_str().unwrap()).is_ok());
        for bad in [
            "/etc/passwd",
            "file:///etc/passwd",
            "../../../../etc/passwd",
            "missing.mp4",
            ".",
        ] {
            assert_eq!(p.check(bad).unwrap_err(), PolicyError::File, "{bad}");
        }
        // The same answer whether the file exists or not.
        assert_eq!(
            p.check("/etc/passwd").unwrap_err().to_string(),
            p.check("/nonexistent/x.mp4").unwrap_err().to_string()
        );
        let fifo = root.path().join("pipe");
        crate::source::make_fifo(&fifo);
        assert_eq!(p.check("pipe").unwrap_err(), PolicyError::File);
        // Without a media root no file is allowed.
        let none = SourcePolicy::default();
        assert_eq!(
            none.check(abs.to_str().unwrap()).unwrap_err(),
            PolicyError::File
        );
    }

    #[test]
    fn devices_and_internal_hosts_are_refused_by_default() {
        let p = SourcePolicy::default();
        assert_eq!(
            p.check("v4l2:///dev/video0").unwrap_err(),
            PolicyError::Device
        );
        assert_eq!(p.check("/dev/video0").unwrap_err(), PolicyError::Device);
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "rtmp://127.0.0.1:1935/live/x",
            "rtsp://localhost/cam",
            "http://[::1]:8080/x.mp4",
            "http://10.0.0.5/x.mp4",
        ] {
            assert_eq!(p.check(url).unwrap_err(), PolicyError::Internal, "{url}");
        }
        let open = SourcePolicy {
            allow_private_networks: true,
            allow_devices: true,
            ..SourcePolicy::default()
        };
        assert!(open.check("rtmp://127.0.0.1:1935/live/x").is_ok());
        assert!(
            open.check("http://127.0.0.1/x.mp4")
                .unwrap()
                .follow_redirects
        );
        let public = p.check("http://93.184.215.14/clip.mp4").unwrap();
        assert!(
            !public.follow_redirects,
            "API callers' sources follow no redirect"
        );
        assert!(open.check("v4l2:///dev/video0").is_ok());
    }
}
