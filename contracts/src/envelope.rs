//! The binary envelope of `frames`, `mouths` and `logits`:
//! `MMAP` | version u16 BE | metadata length u32 BE | metadata JSON | payload.

use serde::{Deserialize, Serialize};

use crate::{ContractError, SCHEMA_VERSION};

/// Magic bytes that open every envelope.
pub const ENVELOPE_MAGIC: &[u8; 4] = b"MMAP";

/// Size of the fixed envelope prefix: magic (4), version (2), metadata length (4).
pub const ENVELOPE_PREFIX_LEN: usize = 10;

/// Encodes metadata and payload into one envelope.
pub fn encode_envelope<M: Serialize>(meta: &M, payload: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).expect("contract types always serialise");
    let mut out = Vec::with_capacity(ENVELOPE_PREFIX_LEN + json.len() + payload.len());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    out
}

/// Splits an envelope into its parsed metadata and its payload.
pub fn decode_envelope<'a, M: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(M, &'a [u8]), ContractError> {
    if bytes.len() < ENVELOPE_PREFIX_LEN {
        return Err(ContractError::Truncated(bytes.len()));
    }
    if &bytes[..4] != ENVELOPE_MAGIC {
        return Err(ContractError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != SCHEMA_VERSION {
        return Err(ContractError::UnsupportedVersion { found: version });
    }
    let len = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    let rest = &bytes[ENVELOPE_PREFIX_LEN..];
    if len > rest.len() {
        return Err(ContractError::MetadataOverrun {
            declared: len,
            available: rest.len(),
        });
    }
    let meta = serde_json::from_slice(&rest[..len])
        .map_err(|e| ContractError::BadMetadata(e.to_string()))?;
    Ok((meta, &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_envelope() {
        let r: Result<(serde_json::Value, &[u8]), _> = decode_envelope(b"hello");
        assert_eq!(r.unwrap_err(), ContractError::Truncated(5));
        let r: Result<(serde_json::Value, &[u8]), _> = decode_envelope(b"{\"event\":\"start\"}");
        assert_eq!(r.unwrap_err(), ContractError::BadMagic);
        let mut bytes = encode_envelope(&serde_json::json!({}), &[1, 2]);
        bytes[5] = 9;
        let r: Result<(serde_json::Value, &[u8]), _> = decode_envelope(&bytes);
        assert_eq!(
            r.unwrap_err(),
            ContractError::UnsupportedVersion { found: 9 }
        );
        let mut bytes = encode_envelope(&serde_json::json!({}), &[]);
        bytes[9] = 255;
        let r: Result<(serde_json::Value, &[u8]), _> = decode_envelope(&bytes);
        assert!(matches!(
            r.unwrap_err(),
            ContractError::MetadataOverrun { .. }
        ));
    }

    #[test]
    fn round_trips() {
        let bytes = encode_envelope(&serde_json::json!({"a": 1}), &[7, 8, 9]);
        let (meta, payload): (serde_json::Value, &[u8]) = decode_envelope(&bytes).unwrap();
        assert_eq!(meta["a"], 1);
        assert_eq!(payload, &[7, 8, 9]);
    }
}
