//! W3C trace context (`traceparent`): continue the caller's trace with a new span per hop.

use std::fmt;

use rand::Rng;

/// A trace and the span this proxy hop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace ID shared by every hop.
    pub trace_id: u128,
    /// 8-byte ID of this hop's span.
    pub span_id: u64,
    /// The caller's span, if the request carried a `traceparent`.
    pub parent_id: Option<u64>,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Continues the trace of a `traceparent` header value, or starts a new sampled trace when
    /// it is absent or invalid.
    pub fn continue_from(header: Option<&str>) -> Self {
        let mut rng = rand::rng();
        let span_id = rng.random::<u64>().max(1);
        match header.and_then(parse) {
            Some((trace_id, parent, flags)) => TraceContext { trace_id, span_id, parent_id: Some(parent), flags },
            None => TraceContext { trace_id: rng.random::<u128>().max(1), span_id, parent_id: None, flags: 1 },
        }
    }

    /// The `traceparent` value for the next hop (this span becomes the parent), without the
    /// allocations of formatting: it is written on every request.
    pub fn traceparent(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut out[3..35], self.trace_id);
        hex_into(&mut out[36..52], u128::from(self.span_id));
        hex_into(&mut out[53..55], u128::from(self.flags));
        out
    }

    /// The trace ID as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// `traceparent` for the next hop: this span becomes the parent.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII hex digits and dashes.
        f.write_str(std::str::from_utf8(&self.traceparent()).unwrap_or_default())
    }
}

/// Writes the low `out.len()` nibbles of `value` as lowercase hex, most significant first.
fn hex_into(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn parse(v: &str) -> Option<(u128, u64, u8)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // Version ff is invalid; future versions may append fields, version 00 may not.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let (trace, parent) = (u128::from_str_radix(trace, 16).ok()?, u64::from_str_radix(parent, 16).ok()?);
    if trace == 0 || parent == 0 {
        return None;
    }
    Some((trace, parent, u8::from_str_radix(flags, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::continue_from(Some(incoming));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id, Some(0x00f067aa0ba902b7));
        assert_ne!(ctx.span_id, 0x00f067aa0ba902b7);
        let out = ctx.to_string();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"), "{out}");
        assert_eq!(parse(&out).unwrap().1, ctx.span_id);
    }

    #[test]
    fn traceparent_bytes_match_the_w3c_format() {
        let ctx =
            TraceContext { trace_id: 0xab << 64 | 0x1, span_id: 0x00f0_67aa_0ba9_02b7, parent_id: None, flags: 1 };
        let expected = format!("00-{:032x}-{:016x}-{:02x}", ctx.trace_id, ctx.span_id, ctx.flags);
        assert_eq!(std::str::from_utf8(&ctx.traceparent()).unwrap(), expected);
        assert_eq!(ctx.to_string(), expected);
        assert_eq!(parse(&expected), Some((ctx.trace_id, ctx.span_id, 1)));
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let ctx = TraceContext::continue_from(Some(bad));
            assert_eq!(ctx.parent_id, None, "{bad}");
            assert_ne!(ctx.trace_id, 0);
        }
    }
}
