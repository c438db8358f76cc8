//! A model repository in Triton's layout, the convention users of model
//! servers already know:
//!
//! ```text
//! MODELS_DIR/
//!   mouthmap-lipnet-grid-s1/      a model, named by its directory
//!     1/                          a version: a positive integer
//!       model.onnx                the model (MouthMap contract)
//!       MODEL_CARD.md             optional: what it is, how it was measured
//!     2/
//!       model.onnx
//! ```
//!
//! The highest version is a model's latest. What a server needs besides the
//! graph (vocabulary, blank, normalisation, the model's own version string,
//! training data hash, metrics) is in the ONNX file's metadata, so a version
//! directory is complete on its own and can be copied as it is. A Triton
//! `config.pbtxt` beside the versions is allowed (see `mouthmap models
//! export-triton`). This module only reads the layout; loading and the
//! contract check are [`crate::model`]'s.

use std::path::{Path, PathBuf};

/// The model file of a version.
pub const MODEL_FILE: &str = "model.onnx";
/// The model card of a version, when it has one.
pub const CARD_FILE: &str = "MODEL_CARD.md";

/// Why a repository or a model in it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(
        "the model repository {0} does not exist or is not a directory (name one with --models-dir or MOUTHMAP_MODELS_DIR)"
    )]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no model named {name:?} in {root} (models there: {known})")]
    NoModel {
        name: String,
        root: PathBuf,
        known: String,
    },
    #[error("the model {name:?} has no version {version} in {root} (versions: {known})")]
    NoVersion {
        name: String,
        version: u64,
        root: PathBuf,
        known: String,
    },
    #[error(
        "{spec:?} is not NAME or NAME:VERSION (NAME of letters, digits, '.', '_' and '-'; VERSION a positive integer)"
    )]
    BadSpec { spec: String },
}

/// One version of a model in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub version: u64,
    pub dir: PathBuf,
}

impl Version {
    /// The version's ONNX file.
    pub fn model(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// The version's model card, if it has one.
    pub fn card(&self) -> Option<PathBuf> {
        let p = self.dir.join(CARD_FILE);
        p.is_file().then_some(p)
    }

    /// `NAME:VERSION`.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// Something in the repository that does not follow the layout: listed
/// for the user, never served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    pub path: PathBuf,
    pub why: &'static str,
}

/// A model repository on disk.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// What a scan of the repository found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every model version, by name, then version.
    pub versions: Vec<Version>,
    pub strays: Vec<Stray>,
}

/// A model's name: what Triton and a file system both take.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `NAME` (the latest version) or `NAME:VERSION`.
pub fn parse_spec(spec: &str) -> Result<(String, Option<u64>), RepositoryError> {
    let bad = || RepositoryError::BadSpec { spec: spec.into() };
    let (name, version) = match spec.split_once(':') {
        None => (spec, None),
        Some((n, v)) => {
            let v: u64 = v.parse().map_err(|_| bad())?;
            if v == 0 {
                return Err(bad());
            }
            (n, Some(v))
        }
    };
    if !valid_name(name) {
        return Err(bad());
    }
    Ok((name.to_string(), version))
}

fn read_dir(path: &Path) -> Result<Vec<std::fs::DirEntry>, RepositoryError> {
    let io = |source| RepositoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(path)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

impl Repository {
    /// The repository at `root`, which must be a directory.
    pub fn open(root: &Path) -> Result<Self, RepositoryError> {
        if !root.is_dir() {
            return Err(RepositoryError::Missing(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every version of every model, and what does not follow the layout.
    pub fn scan(&self) -> Result<Scan, RepositoryError> {
        let mut scan = Scan::default();
        for model in read_dir(&self.root)? {
            let name = model.file_name().to_string_lossy().into_owned();
            let path = model.path();
            if name.starts_with('.') {
                continue;
            }
            if !path.is_dir() {
                scan.strays.push(Stray {
                    path,
                    why: "a model is a directory: NAME/VERSION/model.onnx",
                });
                continue;
            }
            if !valid_name(&name) {
                scan.strays.push(Stray {
                    path,
                    why: "a model's name is letters, digits, '.', '_' and '-'",
                });
                continue;
            }
            let mut versions = Vec::new();
            for entry in read_dir(&path)? {
                let file = entry.file_name().to_string_lossy().into_owned();
                let vpath = entry.path();
                if file.starts_with('.') || file == "config.pbtxt" || vpath.is_file() {
                    continue;
                }
                match file.parse::<u64>() {
                    Ok(v) if v > 0 && vpath.join(MODEL_FILE).is_file() => versions.push(Version {
                        name: name.clone(),
                        version: v,
                        dir: vpath,
                    }),
                    Ok(v) if v > 0 => scan.strays.push(Stray {
                        path: vpath,
                        why: "a version directory without model.onnx",
                    }),
                    _ => scan.strays.push(Stray {
                        path: vpath,
                        why: "version directories are named by positive integers",
                    }),
                }
            }
            versions.sort_by_key(|v| v.version);
            scan.versions.extend(versions);
        }
        Ok(scan)
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<Version>, RepositoryError> {
        let scan = self.scan()?;
        let known = |versions: &[Version]| {
            let mut names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
            names.dedup();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let mine: Vec<Version> = scan
            .versions
            .iter()
            .filter(|v| v.name == name)
            .cloned()
            .collect();
        if mine.is_empty() {
            return Err(RepositoryError::NoModel {
                name: name.into(),
                root: self.root.clone(),
                known: known(&scan.versions),
            });
        }
        Ok(mine)
    }

    /// The version `spec` names: `NAME` (its latest) or `NAME:VERSION`.
    pub fn resolve(&self, spec: &str) -> Result<Version, RepositoryError> {
        let (name, version) = parse_spec(spec)?;
        let versions = self.versions(&name)?;
        match version {
            None => Ok(versions.last().cloned().expect("versions() is never empty")),
            Some(v) => versions
                .iter()
                .find(|x| x.version == v)
                .cloned()
                .ok_or_else(|| RepositoryError::NoVersion {
                    name,
                    version: v,
                    root: self.root.clone(),
                    known: versions
                        .iter()
                        .map(|x| x.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(layout: &[&str]) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        for path in layout {
            let p = dir.path().join(path);
            if path.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, b"x").unwrap();
            }
        }
        let r = Repository::open(dir.path()).unwrap();
        (dir, r)
    }

    #[test]
    fn lists_versions_in_order_and_names_what_does_not_fit() {
        let (_d, r) = repo(&[
            "lipnet/1/model.onnx",
            "lipnet/10/model.onnx",
            "lipnet/2/model.onnx",
            "lipnet/2/MODEL_CARD.md",
            "lipnet/config.pbtxt",
            "lipnet/latest/model.onnx",
            "lipnet/3/",
            "other/1/model.onnx",
            "stray.onnx",
            ".hidden/1/model.onnx",
        ]);
        let scan = r.scan().unwrap();
        let specs: Vec<String> = scan.versions.iter().map(Version::spec).collect();
        assert_eq!(specs, ["lipnet:1", "lipnet:2", "lipnet:10", "other:1"]);
        let why: Vec<(String, &str)> = scan
            .strays
            .iter()
            .map(|s| {
                (
                    s.path.strip_prefix(r.root()).unwrap().display().to_string(),
                    s.why,
                )
            })
            .collect();
        assert_eq!(
            why,
            [
                (
                    "lipnet/3".to_string(),
                    "a version directory without model.onnx"
                ),
                (
                    "lipnet/latest".to_string(),
                    "version directories are named by positive integers"
                ),
                (
                    "stray.onnx".to_string(),
                    "a model is a directory: NAME/VERSION/model.onnx"
                ),
            ]
        );
        assert!(scan.versions[1].card().is_some() && scan.versions[0].card().is_none());
    }

    #[test]
    fn resolves_the_latest_or_a_named_version_and_says_what_exists() {
        let (_d, r) = repo(&["lipnet/1/model.onnx", "lipnet/2/model.onnx"]);
        assert_eq!(r.resolve("lipnet").unwrap().version, 2);
        assert_eq!(r.resolve("lipnet:1").unwrap().version, 1);
        let e = r.resolve("lipnet:7").unwrap_err().to_string();
        assert!(
            e.contains("no version 7") && e.contains("versions: 1, 2"),
            "{e}"
        );
        let e = r.resolve("other").unwrap_err().to_string();
        assert!(
            e.contains("no model named \"other\"") && e.contains("lipnet"),
            "{e}"
        );
        for bad in ["lipnet:0", "lipnet:x", "../x", "", "a/b:1"] {
            let e = r.resolve(bad).unwrap_err();
            assert!(matches!(e, RepositoryError::BadSpec { .. }), "{bad}: {e}");
        }
        let e = Repository::open(Path::new("/nonexistent/models")).unwrap_err();
        assert!(e.to_string().contains("--models-dir"), "{e}");
    }
}
