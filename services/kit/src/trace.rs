//! W3C Trace Context (`traceparent`) across the platform.
//!
//! Every request joins the trace its caller sent in `traceparent` (or starts one), and its trace
//! id appears on every log line of the request. The trace travels on: in the `traceparent` header
//! of calls to other services, and in the `traceparent` header of every event the request
//! publishes (outbox → broker → consumer), so one user action can be followed through all five
//! services' logs with one id.

use std::fmt;

/// A `traceparent` value: the trace, the span that is the parent of the next hop, and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

fn random_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

fn nonzero_u64() -> u64 {
    loop {
        let id = random_u128() as u64;
        if id != 0 {
            return id;
        }
    }
}

impl TraceParent {
    /// The header name.
    pub const HEADER: &'static str = "traceparent";

    /// A new trace (sampled), for a request that came without one.
    pub fn root() -> Self {
        let mut trace_id = random_u128();
        if trace_id == 0 {
            trace_id = 1;
        }
        Self {
            trace_id,
            parent_id: nonzero_u64(),
            flags: 0x01,
        }
    }

    /// A new span of the same trace: what this hop passes on as the parent.
    pub fn child(&self) -> Self {
        Self {
            parent_id: nonzero_u64(),
            ..*self
        }
    }

    /// Parses a `traceparent` value; `None` for anything invalid (the W3C rule: start a new trace).
    /// Versions after `00` are accepted by their first four fields, as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(parent, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields.
        if version == "00" && rest.is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let parent_id = u64::from_str_radix(parent, 16).ok()?;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// The caller's trace continued by a new span of ours, or a new trace.
    pub fn continue_or_start(incoming: Option<TraceParent>) -> Self {
        incoming.map(|t| t.child()).unwrap_or_else(Self::root)
    }

    /// The trace id as 32 hex digits (what logs show).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.parent_id)
    }

    /// Runs `fut` with `self` as the current trace context.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The trace context of the running request or event handler, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|t| *t).ok()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let t = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), SAMPLE);
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        // A later version may add fields.
        assert!(TraceParent::parse(&format!("01{}-more", &SAMPLE[2..])).is_some());
    }

    #[test]
    fn continuing_keeps_the_trace_and_changes_the_span() {
        let incoming = TraceParent::parse(SAMPLE).unwrap();
        let ours = TraceParent::continue_or_start(Some(incoming));
        assert_eq!(ours.trace_id, incoming.trace_id);
        assert_ne!(ours.parent_id, incoming.parent_id);
        let fresh = TraceParent::continue_or_start(TraceParent::parse("garbage"));
        assert_ne!(fresh.trace_id, incoming.trace_id);
        assert_eq!(TraceParent::parse(&fresh.to_string()), Some(fresh));
    }

    #[tokio::test]
    async fn current_is_scoped_to_the_future() {
        assert_eq!(TraceParent::current(), None);
        let t = TraceParent::root();
        let inside = t.scope(async { TraceParent::current() }).await;
        assert_eq!(inside, Some(t));
        assert_eq!(TraceParent::current(), None);
    }
}
