//! Just enough of RFC 5322 / MIME to read a single-part message: unfolded header fields with
//! encoded words (RFC 2047) decoded, and the body with its transfer encoding undone.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The header fields in order and the decoded body (`\n` line ends).
pub(super) fn parse(raw: &[u8]) -> (Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b),
        None => (text.as_str(), ""),
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let encoding = fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Transfer-Encoding"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            match B64.decode(compact.as_bytes()) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).replace("\r\n", "\n"),
                Err(_) => body.to_string(),
            }
        }
        "quoted-printable" => {
            String::from_utf8_lossy(&quoted_printable(body.as_bytes(), false)).replace("\r\n", "\n")
        }
        _ => body.to_string(),
    };
    let headers = fields
        .into_iter()
        .map(|(n, v)| (n, decode_words(&v)))
        .collect();
    (headers, body)
}

/// Undoes quoted-printable; `underscores` for the Q encoding of encoded words (`_` is a space).
fn quoted_printable(input: &[u8], underscores: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'=' if input.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if input.get(i + 1..i + 3) == Some(b"\r\n") => i += 3,
            b'=' => match (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b'_' if underscores => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Decodes the encoded words (`=?utf-8?B?...?=`, `=?utf-8?Q?...?=`) of a header value; the
/// whitespace between two adjacent encoded words is dropped, as RFC 2047 §6.2 says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        let Some((word, tail)) = encoded_word(from) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&word);
        rest = tail;
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: its text and what follows it.
fn encoded_word(s: &str) -> Option<(String, &str)> {
    let inner = s.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let (text, tail) = (&inner[..end], &inner[end + 2..]);
    let bytes = match encoding.to_ascii_uppercase().as_str() {
        "B" => B64.decode(text.as_bytes()).ok()?,
        "Q" => quoted_printable(text.as_bytes(), true),
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_message_as_lettre_writes_it() {
        let raw = b"From: help@helpdesk.test\r\nSubject: =?utf-8?b?V2VsY29tZSwgWm/DqQ==?=\r\n\
            Message-ID: <1@x>\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
            Hello Zo=C3=A9,\r\nsee https://x.test/reset?token=3Dabc and a long line =\r\nthat goes on.\r\n";
        let (headers, body) = parse(raw);
        assert_eq!(headers[1], ("Subject".into(), "Welcome, Zoé".into()));
        assert_eq!(
            body,
            "Hello Zoé,\nsee https://x.test/reset?token=abc and a long line that goes on.\n"
        );
    }

    #[test]
    fn folded_headers_adjacent_words_and_base64_bodies() {
        let raw = b"Subject: =?utf-8?q?caf=C3=A9_au?=\r\n =?utf-8?Q?_lait?= now\r\n\
            Content-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd29ybGQ=\r\n";
        let (headers, body) = parse(raw);
        assert_eq!(headers[0].1, "café au lait now");
        assert_eq!(body, "hello world");
    }
}
