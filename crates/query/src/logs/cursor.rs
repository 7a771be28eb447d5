//! The opaque keyset cursor of `GET /api/logs`: the position just after the last event of a page.
//!
//! It holds the sort order, the last event's `createdAt` (milliseconds, as stored) and `eventId` (the
//! tie-break), and a digest of the filters it was made for, base64url-encoded. Continuing "after (createdAt,
//! eventId)" rather than skipping n events is what keeps a walk free of gaps and repeats while events arrive.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use herald_domain::EventId;
use sha2::{Digest, Sha256};

use super::{Filters, SortOrder};

/// The format version, first in every cursor, so the format can change without misreading old cursors.
const VERSION: &str = "1";

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub order: SortOrder,
    /// `createdAt` of the last event seen, in milliseconds since the epoch.
    pub created_at_ms: i64,
    pub event_id: EventId,
    /// The first 8 bytes of the SHA-256 of the filters, hex: a cursor only continues the walk it was made for.
    digest: String,
}

impl Cursor {
    /// The cursor just after the event (`created_at`, `event_id`), for a walk with `filters` in `order`.
    pub fn after(
        order: SortOrder,
        filters: &Filters,
        created_at: DateTime<Utc>,
        event_id: EventId,
    ) -> Self {
        Self {
            order,
            created_at_ms: created_at.timestamp_millis(),
            event_id,
            digest: digest(filters),
        }
    }

    /// Whether this cursor was made for `filters`.
    pub fn fits(&self, filters: &Filters) -> bool {
        self.digest == digest(filters)
    }

    pub fn encode(&self) -> String {
        let order = match self.order {
            SortOrder::NewestFirst => "d",
            SortOrder::OldestFirst => "a",
        };
        let plain = format!(
            "{VERSION}:{order}:{}:{}:{}",
            self.created_at_ms, self.digest, self.event_id
        );
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// Reads a cursor made by [`Cursor::encode`]; `Err` says why it is not one.
    pub fn decode(raw: &str) -> Result<Self, String> {
        const NOT_A_CURSOR: &str =
            "is not a cursor this service made; pass nextCursor as it was returned";
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim_end_matches('='))
            .map_err(|_| NOT_A_CURSOR.to_owned())?;
        let plain = String::from_utf8(bytes).map_err(|_| NOT_A_CURSOR.to_owned())?;
        // The event id comes last: it may itself contain ':'.
        let mut parts = plain.splitn(5, ':');
        let (Some(VERSION), Some(order), Some(millis), Some(digest), Some(event_id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NOT_A_CURSOR.to_owned());
        };
        let order = match order {
            "d" => SortOrder::NewestFirst,
            "a" => SortOrder::OldestFirst,
            _ => return Err(NOT_A_CURSOR.to_owned()),
        };
        let created_at_ms: i64 = millis.parse().map_err(|_| NOT_A_CURSOR.to_owned())?;
        let valid_digest = digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        let event_id = EventId::parse(event_id).map_err(|_| NOT_A_CURSOR.to_owned())?;
        if !valid_digest || DateTime::<Utc>::from_timestamp_millis(created_at_ms).is_none() {
            return Err(NOT_A_CURSOR.to_owned());
        }
        Ok(Self {
            order,
            created_at_ms,
            event_id,
            digest: digest.to_owned(),
        })
    }
}

/// A short digest of the filters, in a canonical form (the aliases and date spellings a client used do not
/// matter, only their meaning).
fn digest(filters: &Filters) -> String {
    let canonical = format!(
        "userId={:?};eventType={:?};channel={:?};priority={:?};status={:?};from={:?};before={:?}",
        filters.user_id,
        filters.event_type,
        filters.channel.map(|c| c.as_str()),
        filters.priority.map(|p| p.as_str()),
        filters.status.map(|s| s.as_str()),
        filters.range.from.map(|t| t.timestamp_millis()),
        filters.range.before.map(|t| t.timestamp_millis()),
    );
    let hash = Sha256::digest(canonical.as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use herald_domain::Status;

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("valid")
    }

    #[test]
    fn cursors_round_trip_with_colons_in_the_event_id() {
        let filters = Filters {
            status: Some(Status::Delivered),
            ..Filters::default()
        };
        let id = EventId::parse("order:42:confirm").expect("valid");
        let cursor = Cursor::after(SortOrder::OldestFirst, &filters, at(1_700_000_000_123), id);
        let decoded = Cursor::decode(&cursor.encode()).expect("decodes");
        assert_eq!(decoded, cursor);
        assert!(decoded.fits(&filters));
        assert!(!decoded.fits(&Filters::default()));
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for raw in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("2:d:1:0011223344556677:e1"),
            &URL_SAFE_NO_PAD.encode("1:x:1:0011223344556677:e1"),
            &URL_SAFE_NO_PAD.encode("1:d:soon:0011223344556677:e1"),
            &URL_SAFE_NO_PAD.encode("1:d:1:zz:e1"),
            &URL_SAFE_NO_PAD.encode("1:d:1:0011223344556677:has space"),
        ] {
            assert!(Cursor::decode(raw).is_err(), "{raw} decoded");
        }
    }
}
