//! HTTP `Range` requests for blobs (RFC 9110 §14), as engines send them to resume.
//!
//! One range per request is served. A header shoal cannot honour exactly (several
//! ranges, another unit, bad syntax) is ignored and the whole blob is sent, which the
//! RFC allows; a range that starts past the end is unsatisfiable (416).

/// An inclusive-exclusive byte range within a blob of known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// What a `Range` header asks of a blob of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Send the whole blob (no header, or one shoal ignores).
    Whole,
    /// Send these bytes with 206.
    Partial(ByteRange),
    /// Nothing of the blob can satisfy it: 416.
    Unsatisfiable,
}

/// Interprets `header` (the value of `Range`, if any) for a blob of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match parse(last) {
            Some(n) if n > 0 && size > 0 => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size,
            }),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        // `bytes=A-`: from A to the end.
        (false, true) => match parse(first) {
            Some(a) if a < size => RangeRequest::Partial(ByteRange {
                start: a,
                end: size,
            }),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        // `bytes=A-B`, B inclusive and clamped to the end.
        (false, false) => match (parse(first), parse(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(ByteRange {
                        start: a,
                        end: b.saturating_add(1).min(size),
                    })
                }
            }
            _ => RangeRequest::Whole,
        },
        (true, true) => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn the_forms_engines_send() {
        assert_eq!(parse_range(None, 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 10), part(0, 10));
        assert_eq!(parse_range(Some("bytes=4-"), 10), part(4, 10));
        assert_eq!(parse_range(Some("bytes=2-5"), 10), part(2, 6));
        assert_eq!(parse_range(Some("bytes=2-500"), 10), part(2, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), part(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), part(0, 10));
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=0-"), 0),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), RangeRequest::Whole);
    }

    proptest! {
        #[test]
        fn partial_ranges_stay_inside_the_blob(h in "bytes=[0-9-]{0,12}", size in 0u64..1000) {
            if let RangeRequest::Partial(r) = parse_range(Some(&h), size) {
                prop_assert!(r.start < r.end);
                prop_assert!(r.end <= size);
            }
        }
    }
}
