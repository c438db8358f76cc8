//! Declarations: entities and feature views, read from one TOML file and
//! checked before anything is written or read.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::FeatureError;
use crate::value::{FieldType, Value};

/// The declarations MouthMap ships (`feature-store/features.toml`).
pub const DEFAULT_DECLARATIONS: &str = include_str!("../features.toml");

/// An entity features are kept for (a stream, a speaker).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    #[serde(default)]
    pub description: String,
}

/// A named group of typed fields of one entity, with a time to live and the
/// stage that writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub name: String,
    pub entity: String,
    pub writer: String,
    pub ttl: Duration,
    pub description: String,
    pub fields: BTreeMap<String, FieldType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    entity: String,
    writer: String,
    ttl: String,
    #[serde(default)]
    description: String,
    fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    entities: BTreeMap<String, Entity>,
    views: BTreeMap<String, RawView>,
}

/// A TTL as people write it: `30d`, `12h`, `90s`.
pub fn format_ttl(ttl: Duration) -> String {
    let s = ttl.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => humantime::format_duration(ttl).to_string(),
    }
}

/// All declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub entities: BTreeMap<String, Entity>,
    pub views: BTreeMap<String, View>,
}

impl Registry {
    /// The shipped declarations.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_DECLARATIONS, "builtin features.toml")
            .expect("shipped declarations are valid")
    }

    /// Reads declarations from a file.
    pub fn load(path: &Path) -> Result<Self, FeatureError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FeatureError::Declarations(format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks declarations; `origin` names them in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, FeatureError> {
        let bad = |m: String| FeatureError::Declarations(format!("{origin}: {m}"));
        let raw: RawRegistry = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut views = BTreeMap::new();
        for (name, v) in raw.views {
            if !raw.entities.contains_key(&v.entity) {
                return Err(bad(format!(
                    "view {name:?} is of entity {:?}, which is not declared (entities: {})",
                    v.entity,
                    raw.entities.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            let ttl = humantime::parse_duration(&v.ttl).map_err(|e| {
                bad(format!(
                    "view {name:?}: ttl {:?} is not a duration like `1h` or `30d`: {e}",
                    v.ttl
                ))
            })?;
            if ttl.is_zero() {
                return Err(bad(format!("view {name:?}: ttl must be longer than zero")));
            }
            if v.fields.is_empty() {
                return Err(bad(format!("view {name:?} declares no fields")));
            }
            let mut fields = BTreeMap::new();
            for (field, ty) in v.fields {
                let ty = FieldType::parse(&ty)
                    .ok_or_else(|| bad(format!("view {name:?}: field {field:?} has type {ty:?}; types are string, int, float, bool")))?;
                fields.insert(field, ty);
            }
            views.insert(
                name.clone(),
                View {
                    name,
                    entity: v.entity,
                    writer: v.writer,
                    ttl,
                    description: v.description,
                    fields,
                },
            );
        }
        // A field name is unique within its entity, so `set stream ID field=value`
        // finds its view without naming it.
        for entity in raw.entities.keys() {
            let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
            for v in views.values().filter(|v| &v.entity == entity) {
                for f in v.fields.keys() {
                    if let Some(other) = seen.insert(f, &v.name) {
                        return Err(bad(format!(
                            "field {f:?} of entity {entity:?} is declared in both {other:?} and {:?}",
                            v.name
                        )));
                    }
                }
            }
        }
        Ok(Self {
            entities: raw.entities,
            views,
        })
    }

    /// A declared view.
    pub fn view(&self, name: &str) -> Result<&View, FeatureError> {
        self.views
            .get(name)
            .ok_or_else(|| FeatureError::UnknownView {
                view: name.to_string(),
                known: self.views.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// A declared entity.
    pub fn entity(&self, name: &str) -> Result<&Entity, FeatureError> {
        self.entities
            .get(name)
            .ok_or_else(|| FeatureError::UnknownEntity {
                entity: name.to_string(),
                known: self.entities.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The views of an entity.
    pub fn views_of<'a>(&'a self, entity: &str) -> impl Iterator<Item = &'a View> + 'a {
        let entity = entity.to_string();
        self.views.values().filter(move |v| v.entity == entity)
    }

    /// The view of `entity` that declares `field`.
    pub fn view_with_field(&self, entity: &str, field: &str) -> Result<&View, FeatureError> {
        self.entity(entity)?;
        self.views_of(entity)
            .find(|v| v.fields.contains_key(field))
            .ok_or_else(|| FeatureError::UnknownField {
                view: format!("entity {entity}"),
                field: field.to_string(),
                known: self
                    .views_of(entity)
                    .flat_map(|v| v.fields.keys().cloned())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl View {
    /// Checks a write: every field declared, every value of its type.
    pub fn check(&self, values: &BTreeMap<String, Value>) -> Result<(), FeatureError> {
        for (field, value) in values {
            let ty = self.field_type(field)?;
            if value.field_type() != ty {
                return Err(FeatureError::WrongType {
                    view: self.name.clone(),
                    field: field.clone(),
                    expected: ty,
                    found: value.field_type(),
                });
            }
        }
        Ok(())
    }

    /// The declared type of `field`.
    pub fn field_type(&self, field: &str) -> Result<FieldType, FeatureError> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| FeatureError::UnknownField {
                view: format!("view {}", self.name),
                field: field.to_string(),
                known: self.fields.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_declarations_parse() {
        let r = Registry::builtin();
        assert_eq!(r.view("stream_settings").unwrap().entity, "stream");
        assert_eq!(
            r.view("speaker_activity").unwrap().ttl,
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(
            r.view_with_field("stream", "grammar").unwrap().name,
            "stream_settings"
        );
        assert!(matches!(
            r.view_with_field("stream", "colour"),
            Err(FeatureError::UnknownField { .. })
        ));
        assert!(matches!(
            r.view("nope"),
            Err(FeatureError::UnknownView { .. })
        ));
    }

    #[test]
    fn bad_declarations_say_what_is_wrong() {
        let cases = [
            (
                "[entities]\n[views.v]\nentity='x'\nwriter='w'\nttl='1h'\nfields={a='int'}",
                "not declared",
            ),
            (
                "[entities.x]\n[views.v]\nentity='x'\nwriter='w'\nttl='soon'\nfields={a='int'}",
                "not a duration",
            ),
            (
                "[entities.x]\n[views.v]\nentity='x'\nwriter='w'\nttl='1h'\nfields={a='integer'}",
                "types are",
            ),
            (
                "[entities.x]\n[views.v]\nentity='x'\nwriter='w'\nttl='1h'\nfields={}",
                "no fields",
            ),
            (
                "[entities.x]\n[views.v]\nentity='x'\nwriter='w'\nttl='1h'\nfields={a='int'}\n[views.w]\nentity='x'\nwriter='w'\nttl='1h'\nfields={a='int'}",
                "declared in both",
            ),
            ("[entities.x]\ncolour='red'\n[views]", "unknown field"),
        ];
        for (text, want) in cases {
            let e = Registry::parse(text, "t.toml").unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("t.toml"),
                "{text:?} gave {e}"
            );
        }
    }

    #[test]
    fn writes_are_checked_against_the_view() {
        let r = Registry::builtin();
        let v = r.view("stream_quality").unwrap();
        let mut ok = BTreeMap::new();
        ok.insert("face_share".to_string(), Value::Float(0.9));
        ok.insert("frames".to_string(), Value::Int(75));
        v.check(&ok).unwrap();
        let mut wrong = BTreeMap::new();
        wrong.insert("frames".to_string(), Value::Str("many".into()));
        let e = v.check(&wrong).unwrap_err().to_string();
        assert!(e.contains("frames") && e.contains("int"), "{e}");
        let mut unknown = BTreeMap::new();
        unknown.insert("colour".to_string(), Value::Str("red".into()));
        assert!(matches!(
            v.check(&unknown),
            Err(FeatureError::UnknownField { .. })
        ));
    }
}
