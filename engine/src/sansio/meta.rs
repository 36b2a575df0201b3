//! What a shared file is: its metadata, its piece geometry and bitfields.
//!
//! A file is cut into pieces of [`PIECE_LEN`] bytes; the last piece holds the
//! remainder and is shorter unless the length is an exact multiple. An empty
//! file has no pieces. A [`PieceIndex`] is only obtained through
//! [`Geometry::piece`], so code holding one never re-checks its range.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Length of every piece but the last: 512 KiB.
pub const PIECE_LEN: u64 = 512 * 1024;

/// Bytes in a SHA1 digest.
pub const SHA1_LEN: usize = 20;

/// A SHA1 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sha1Digest(pub [u8; SHA1_LEN]);

impl Sha1Digest {
    /// The digest as 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha1({})", self.to_hex())
    }
}

impl fmt::Display for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Everything a downloader needs to fetch and verify a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The file's name within its group (validated by [`crate::names`]).
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// SHA1 of the whole file: the file's identity on the wire.
    pub sha1: Sha1Digest,
    /// SHA1 of each piece, in order.
    pub piece_hashes: Vec<Sha1Digest>,
}

/// Why a [`FileMeta`] is not self-consistent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetaError {
    /// The number of piece hashes does not match the length.
    #[error("{got} piece hashes for a {len}-byte file, expected {expected}")]
    PieceCount {
        /// The file length.
        len: u64,
        /// Pieces the length implies.
        expected: u64,
        /// Piece hashes present.
        got: usize,
    },
}

impl FileMeta {
    /// The file's piece geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.len)
    }

    /// Checks that the piece hashes match the length.
    pub fn validate(&self) -> Result<(), MetaError> {
        let expected = self.geometry().piece_count();
        if self.piece_hashes.len() as u64 != expected {
            return Err(MetaError::PieceCount {
                len: self.len,
                expected,
                got: self.piece_hashes.len(),
            });
        }
        Ok(())
    }
}

/// How a file of a given length is cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    len: u64,
    piece_len: u64,
}

/// The index of a piece that exists in some file's [`Geometry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceIndex(u32);

impl PieceIndex {
    /// An index the caller knows to be in range (the picker, whose piece
    /// count is the geometry's).
    pub(crate) fn from_picker(i: u32) -> Self {
        PieceIndex(i)
    }

    /// The index as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Geometry {
    /// The geometry of a `len`-byte file with [`PIECE_LEN`] pieces.
    pub fn new(len: u64) -> Self {
        Self::with_piece_len(len, PIECE_LEN)
    }

    /// The geometry of a `len`-byte file with pieces of `piece_len` bytes.
    ///
    /// # Panics
    /// If `piece_len` is zero.
    pub fn with_piece_len(len: u64, piece_len: u64) -> Self {
        assert!(piece_len > 0, "piece length must be positive");
        Self { len, piece_len }
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (and so has no pieces).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length of every piece but the last.
    pub fn piece_len(&self) -> u64 {
        self.piece_len
    }

    /// Number of pieces: zero for an empty file.
    pub fn piece_count(&self) -> u64 {
        self.len.div_ceil(self.piece_len)
    }

    /// Validates `index` against this geometry.
    pub fn piece(&self, index: u64) -> Option<PieceIndex> {
        (index < self.piece_count()).then_some(PieceIndex(index as u32))
    }

    /// Every piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> {
        (0..self.piece_count()).map(|i| PieceIndex(i as u32))
    }

    /// The byte range of a piece within the file.
    pub fn range(&self, piece: PieceIndex) -> Range<u64> {
        let start = u64::from(piece.0) * self.piece_len;
        start..(start + self.piece_len).min(self.len)
    }

    /// The length of a piece.
    pub fn len_of(&self, piece: PieceIndex) -> u64 {
        let r = self.range(piece);
        r.end - r.start
    }
}

/// One bit per piece: which pieces a peer has.
///
/// Bit `i` is bit `7 - i % 8` of byte `i / 8` (BitTorrent's order); the spare
/// bits of the last byte are always zero.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// A bitfield of `len` bits, all clear.
    pub fn new(len: u32) -> Self {
        Self { bits: vec![0; (len as usize).div_ceil(8)], len, ones: 0 }
    }

    /// A bitfield of `len` bits, all set.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Rebuilds a bitfield from its bytes; `None` if the byte count is wrong
    /// or a spare bit is set.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (bytes.len() * 8) as u32 - len;
        if spare > 0 && bytes[bytes.len() - 1] & ((1u8 << spare) - 1) != 0 {
            return None;
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Some(Self { bits: bytes.to_vec(), len, ones })
    }

    /// The bytes, for the wire or a file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether there are no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.ones
    }

    /// Whether every bit is set.
    pub fn is_complete(&self) -> bool {
        self.ones == self.len
    }

    /// Whether bit `i` is set; false when out of range.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was clear. Out of range is ignored.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }
}

impl Bitfield {
    /// Clears bit `i`; returns whether it was set.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn geometry_of_edge_lengths() {
        let empty = Geometry::new(0);
        assert_eq!(empty.piece_count(), 0);
        assert!(empty.piece(0).is_none());

        let one = Geometry::new(1);
        assert_eq!(one.piece_count(), 1);
        assert_eq!(one.range(one.piece(0).unwrap()), 0..1);

        let exact = Geometry::new(3 * PIECE_LEN);
        assert_eq!(exact.piece_count(), 3);
        assert_eq!(exact.len_of(exact.piece(2).unwrap()), PIECE_LEN);
        assert!(exact.piece(3).is_none());

        let ragged = Geometry::new(2 * PIECE_LEN + 5);
        assert_eq!(ragged.piece_count(), 3);
        assert_eq!(ragged.range(ragged.piece(2).unwrap()), 2 * PIECE_LEN..2 * PIECE_LEN + 5);
    }

    #[test]
    fn meta_validation_counts_pieces() {
        let meta = FileMeta {
            name: "a".into(),
            len: PIECE_LEN + 1,
            sha1: Sha1Digest([0; 20]),
            piece_hashes: vec![Sha1Digest([0; 20])],
        };
        assert_eq!(
            meta.validate(),
            Err(MetaError::PieceCount { len: PIECE_LEN + 1, expected: 2, got: 1 })
        );
    }

    #[test]
    fn bitfield_bit_order_is_msb_first() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count_ones(), 2);
        assert!(Bitfield::from_bytes(&[0x80, 0x41], 10).is_none(), "spare bit set");
        assert!(Bitfield::from_bytes(&[0x80], 10).is_none(), "short");
        assert_eq!(Bitfield::from_bytes(&[0x80, 0x40], 10), Some(b));
    }

    proptest! {
        #[test]
        fn pieces_tile_the_file(len in 0u64..10_000, piece_len in 1u64..700) {
            let g = Geometry::with_piece_len(len, piece_len);
            let mut next = 0;
            for p in g.pieces() {
                let r = g.range(p);
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start && r.end - r.start <= piece_len);
                next = r.end;
            }
            prop_assert_eq!(next, len);
        }

        #[test]
        fn bitfield_round_trips(len in 0u32..200, sets in proptest::collection::vec(0u32..220, 0..50)) {
            let mut b = Bitfield::new(len);
            for s in &sets { b.set(*s); }
            let back = Bitfield::from_bytes(b.as_bytes(), len).unwrap();
            prop_assert_eq!(back.count_ones(), b.count_ones());
            prop_assert_eq!(back, b);
        }
    }
}
