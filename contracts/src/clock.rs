//! Wall-clock times as the contracts carry them (`started_at_ms`,
//! `ended_at_ms`, `ingest_us`): since the Unix epoch, 0 if the clock is
//! before it.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_and_microseconds_agree() {
        let (ms, us) = (super::now_ms(), super::now_us());
        assert!(ms > 1_700_000_000_000, "{ms}");
        assert!((us / 1000 - ms).abs() < 1000, "{us} {ms}");
    }
}
