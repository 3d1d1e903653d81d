//! Keyset pagination, newest first on `(created_at DESC, id DESC)`.
//!
//! The cursor is an opaque base64url text of the last row's key; the next page holds the rows
//! strictly after it, so rows inserted while a client walks the pages neither repeat nor hide
//! rows that existed when the walk started.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, timestamp_in_range};

/// The header that carries the next page's cursor.
pub static NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

/// Default and maximum page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

/// The position after which a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let text = format!("{}.{}", self.created_at.timestamp_micros(), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(cursor: &str) -> ApiResult<Self> {
        let invalid = || ApiError::bad_request("cursor is invalid");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let created_at = DateTime::from_timestamp_micros(micros)
            .filter(timestamp_in_range)
            .ok_or_else(invalid)?;
        Ok(Self {
            created_at,
            id: id.parse().map_err(|_| invalid())?,
        })
    }
}

/// A validated `limit` and `cursor`.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> ApiResult<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        // A cursor given is a cursor: empty or padded with spaces, it is not one.
        let after = cursor.map(Cursor::decode).transpose()?;
        Ok(Self { limit, after })
    }

    /// Rows to fetch: one more than the page, to know whether another page exists.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Trims the extra row and returns the next page's cursor when there is one.
    pub fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> Cursor) -> Option<Cursor> {
        if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last().map(key)
        } else {
            None
        }
    }
}

/// `X-Next-Cursor` when another page exists.
pub fn next_cursor_header(next: Option<Cursor>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = next.and_then(|c| HeaderValue::from_str(&c.encode()).ok()) {
        headers.insert(NEXT_CURSOR.clone(), value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        // Security review, item 9: a time PostgreSQL cannot compare is refused, not a 500.
        let out_of_range = |micros: i64| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("{micros}.{}", Uuid::nil()))
        };
        let too_early = out_of_range(-8_210_298_412_800_000_000); // year -258000
        let too_late = out_of_range(8_210_298_412_800_000_000);
        for bad in [
            "",
            "!!!",
            "bm90LWEtY3Vyc29y",
            "MTIzLm5vdC1hLXV1aWQ",
            &too_early,
            &too_late,
        ] {
            assert_eq!(
                Cursor::decode(bad).unwrap_err().status.as_u16(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn limits() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(501), None).is_err());
        let p = PageRequest::parse(Some(2), None).unwrap();
        let mut rows = vec![1, 2, 3];
        let key = |_: &i32| Cursor {
            created_at: Utc::now(),
            id: Uuid::nil(),
        };
        assert!(p.finish(&mut rows, key).is_some());
        assert_eq!(rows, vec![1, 2]);
    }
}
