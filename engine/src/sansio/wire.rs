//! Framing shared by every ringshare protocol.
//!
//! A frame is `<len u32 BE><type u32 BE><payload>`, where `len` counts the
//! whole frame, header included, so the smallest frame is [`HEADER_LEN`]
//! bytes. Each protocol states its own maximum frame length; the decoder
//! rejects a longer frame from its header alone, *before* anything is
//! allocated or buffered for it.
//!
//! The decoder works on a borrowed byte buffer and never does I/O: the caller
//! reads bytes, calls [`decode`], and either gets a frame and the number of
//! bytes it used, or learns how many more bytes it needs.

use thiserror::Error;

/// Bytes in a frame header: the length (u32) and the type (u32).
pub const HEADER_LEN: usize = 4 + 4;

/// A frame borrowed from the decoder's input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The protocol's message type.
    pub kind: u32,
    /// The payload: everything after the header.
    pub payload: &'a [u8],
}

/// Why a byte buffer does not (yet) hold a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The buffer holds a valid prefix of a frame; at least this many more
    /// bytes are needed. Not a protocol error: read more and try again.
    #[error("need {0} more bytes")]
    NeedMore(usize),
    /// The header announces a frame longer than the protocol allows. The
    /// peer is broken or hostile: answer with an error and disconnect.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The announced length.
        len: u32,
        /// The protocol's limit.
        max: u32,
    },
    /// The header announces a length shorter than the header itself.
    #[error("frame length {0} is shorter than the {HEADER_LEN}-byte header")]
    TooShort(u32),
}

/// Decodes the frame at the start of `buf`, allowing frames of at most
/// `max_len` bytes (header included).
///
/// Returns the frame and the number of bytes it occupies in `buf`.
pub fn decode(buf: &[u8], max_len: u32) -> Result<(Frame<'_>, usize), DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::NeedMore(HEADER_LEN - buf.len()));
    };
    let (len, kind) = parse_header(header.try_into().expect("slice of HEADER_LEN bytes"));
    check_len(len, max_len)?;
    let len = len as usize;
    if buf.len() < len {
        return Err(DecodeError::NeedMore(len - buf.len()));
    }
    Ok((Frame { kind, payload: &buf[HEADER_LEN..len] }, len))
}

/// Parses a header into `(len, kind)` without checking it.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> (u32, u32) {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    (len, kind)
}

/// Checks a header's announced length against the header size and `max_len`.
pub fn check_len(len: u32, max_len: u32) -> Result<(), DecodeError> {
    if (len as usize) < HEADER_LEN {
        return Err(DecodeError::TooShort(len));
    }
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    Ok(())
}

/// Appends a frame of type `kind` carrying `payload` to `out`.
///
/// # Panics
/// If the frame would not fit a u32 length (a payload of 4 GiB): callers
/// encode payloads bounded far below that by their protocol's limit.
pub fn encode(kind: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(HEADER_LEN + payload.len()).expect("frame larger than 4 GiB");
    out.reserve(len as usize);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes just the header of a frame whose payload is `payload_len` bytes:
/// for senders that send the payload from elsewhere (a file, a splice).
pub fn header(kind: u32, payload_len: usize) -> Option<[u8; HEADER_LEN]> {
    let len = u32::try_from(HEADER_LEN.checked_add(payload_len)?).ok()?;
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4..].copy_from_slice(&kind.to_be_bytes());
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_vector() {
        let bytes = [
            0x00, 0x00, 0x00, 0x0b, // len = 11: 8 header + 3 payload
            0x00, 0x00, 0x00, 0x07, // type = 7
            b'a', b'b', b'c', // payload
            0xff, // the next frame's first byte: not consumed
        ];
        let (frame, used) = decode(&bytes, 1024).unwrap();
        assert_eq!(used, 11);
        assert_eq!(frame, Frame { kind: 7, payload: b"abc" });
        let mut out = Vec::new();
        encode(7, b"abc", &mut out);
        assert_eq!(out, bytes[..11]);
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let bytes = [0, 0, 0, 8, 0, 0, 0, 1];
        let (frame, used) = decode(&bytes, 8).unwrap();
        assert_eq!((frame.kind, frame.payload.len(), used), (1, 0, 8));
    }

    #[test]
    fn oversized_frame_rejected_from_header_alone() {
        // Only the header is present: the limit is enforced before waiting
        // for (or allocating) the announced 4 GiB.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        assert_eq!(
            decode(&bytes, 1 << 20),
            Err(DecodeError::TooLong { len: u32::MAX, max: 1 << 20 })
        );
    }

    #[test]
    fn length_below_header_rejected() {
        let bytes = [0, 0, 0, 7, 0, 0, 0, 1];
        assert_eq!(decode(&bytes, 1024), Err(DecodeError::TooShort(7)));
    }

    #[test]
    fn need_more_counts_missing_bytes() {
        assert_eq!(decode(&[0, 0], 64), Err(DecodeError::NeedMore(6)));
        assert_eq!(decode(&[0, 0, 0, 12, 0, 0, 0, 1, 9], 64), Err(DecodeError::NeedMore(3)));
    }

    #[test]
    fn every_prefix_of_a_frame_needs_more() {
        let mut out = Vec::new();
        encode(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9], &mut out);
        for n in 0..out.len() {
            match decode(&out[..n], 1024) {
                Err(DecodeError::NeedMore(k)) => assert!(k > 0 && n + k <= out.len()),
                other => panic!("prefix {n}: {other:?}"),
            }
        }
        assert!(decode(&out, 1024).is_ok());
    }

    proptest! {
        #[test]
        fn round_trip(kind: u32, payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut out = Vec::new();
            encode(kind, &payload, &mut out);
            let (frame, used) = decode(&out, 4096).unwrap();
            prop_assert_eq!(used, out.len());
            prop_assert_eq!(frame.kind, kind);
            prop_assert_eq!(frame.payload, &payload[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0u32..128) {
            match decode(&bytes, max) {
                Ok((frame, used)) => {
                    prop_assert!(used <= bytes.len() && used as u32 <= max);
                    prop_assert_eq!(frame.payload.len() + HEADER_LEN, used);
                }
                Err(DecodeError::NeedMore(n)) => prop_assert!(n > 0),
                Err(_) => {}
            }
        }
    }
}
