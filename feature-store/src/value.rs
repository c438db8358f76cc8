//! Typed feature values, as they are declared, stored in Redis and shown in JSON.

use std::fmt;

/// The type of a declared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Float,
    Bool,
}

impl FieldType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "string" => Some(Self::String),
            "int" => Some(Self::Int),
            "float" => Some(Self::Float),
            "bool" => Some(Self::Bool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Float => "float",
            Self::Bool => "bool",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One feature value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    pub fn field_type(&self) -> FieldType {
        match self {
            Self::Str(_) => FieldType::String,
            Self::Int(_) => FieldType::Int,
            Self::Float(_) => FieldType::Float,
            Self::Bool(_) => FieldType::Bool,
        }
    }

    /// Parses text as a value of `ty` (the CLI's `field=value`, and what
    /// Redis holds); None when it is not one.
    pub fn parse(ty: FieldType, text: &str) -> Option<Self> {
        match ty {
            FieldType::String => Some(Self::Str(text.to_string())),
            FieldType::Int => text.trim().parse().ok().map(Self::Int),
            FieldType::Float => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Self::Float),
            FieldType::Bool => match text.trim() {
                "true" | "1" => Some(Self::Bool(true)),
                "false" | "0" => Some(Self::Bool(false)),
                _ => None,
            },
        }
    }

    /// The text stored in Redis; [`parse`](Self::parse) reads it back.
    pub fn encode(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Str(s) => serde_json::Value::from(s.as_str()),
            Self::Int(i) => serde_json::Value::from(*i),
            Self::Float(f) => serde_json::Value::from(*f),
            Self::Bool(b) => serde_json::Value::from(*b),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_stored_text() {
        for v in [
            Value::Str("s1 speaker".into()),
            Value::Int(-42),
            Value::Float(0.125),
            Value::Float(17.0),
            Value::Bool(true),
        ] {
            assert_eq!(Value::parse(v.field_type(), &v.encode()), Some(v.clone()));
        }
    }

    #[test]
    fn text_of_the_wrong_type_is_refused() {
        assert_eq!(Value::parse(FieldType::Int, "1.5"), None);
        assert_eq!(Value::parse(FieldType::Float, "NaN"), None);
        assert_eq!(Value::parse(FieldType::Bool, "yes"), None);
        assert_eq!(Value::parse(FieldType::Float, "3"), Some(Value::Float(3.0)));
    }
}
