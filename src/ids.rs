//! Identifier and timestamp types shared by every layer: `KeyId`, `EventId`, `Micros`.

use std::fmt;

use chrono::{DateTime, Utc};

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// An API key's public id: `key-` + 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn random() -> Self {
        Self(format!("key-{}", random_hex(8)))
    }

    /// Wraps an id read back from the database or a URL. Ids are opaque; an id that was never
    /// issued simply matches nothing.
    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event id: `evt-` + 24 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn random() -> Self {
        Self(format!("evt-{}", random_hex(12)))
    }

    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A UTC instant in whole microseconds since the Unix epoch: how every time is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// Parses an ISO-8601 / RFC 3339 time with any offset (`Z`, `+00:00`, …) and up to
    /// nanosecond precision, truncated to microseconds. A time without an offset is UTC.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(Self(dt.timestamp_micros()));
        }
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| Self(n.and_utc().timestamp_micros()))
    }

    /// Fixed-width ISO-8601 with exactly six fractional digits and `Z`, so that the text sorts
    /// like the instant (clients sort `modified_at` as plain strings).
    pub fn to_rfc3339(self) -> String {
        let dt = DateTime::<Utc>::from_timestamp_micros(self.0).unwrap_or_default();
        dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc() {
        assert_eq!(Micros(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            Micros(1_778_097_600_123_456).to_rfc3339(),
            "2026-05-06T20:00:00.123456Z"
        );
    }

    #[test]
    fn parses_both_utc_spellings_at_microsecond_precision() {
        let z = Micros::parse_rfc3339("2026-05-07T20:00:00.123456Z").unwrap();
        let off = Micros::parse_rfc3339("2026-05-07T20:00:00.123456+00:00").unwrap();
        let naive = Micros::parse_rfc3339("2026-05-07T20:00:00.123456").unwrap();
        assert_eq!(z, off);
        assert_eq!(z, naive);
        assert_eq!(z.to_rfc3339(), "2026-05-07T20:00:00.123456Z");
        let plus2 = Micros::parse_rfc3339("2026-05-07T22:00:00+02:00").unwrap();
        assert_eq!(plus2.to_rfc3339(), "2026-05-07T20:00:00.000000Z");
        assert!(Micros::parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn ids_have_their_prefixes() {
        assert!(KeyId::random().as_str().starts_with("key-"));
        assert_eq!(KeyId::random().as_str().len(), 20);
        assert!(EventId::random().as_str().starts_with("evt-"));
    }
}
