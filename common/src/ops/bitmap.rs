//! The changed-blocks bitmap of `Volume.list_changed_blocks` (docs/cbt.md, "The bitmap"):
//! pure logic, no Ceph.
//!
//! - One bit per [`GRANULARITY`] (64 KiB) of the volume, the first bit for the first 64 KiB;
//!   within a byte the most significant bit comes first (what xapi's SMAPIv1 drivers return:
//!   xcp-ng/sm `drivers/VDI.py` builds it with a big-endian `bitarray`, and Xen Orchestra
//!   reads it as big-endian 32-bit words).
//! - A bit is set when any byte of its 64 KiB may differ: each changed extent is widened to
//!   whole blocks at both ends, so a superset of the changes is reported, never less.
//! - The bitmap covers the larger of the two volumes (a volume grown between two snapshots
//!   is covered to its new end), or the requested window, widened to whole blocks.
//! - Its length is rounded up to whole 32-bit words with zero bits: Xen Orchestra reads one
//!   big-endian `u32` per 2 MiB block of the disk (`readUInt32BE(block * 4)`), which would
//!   fail past the end of a bitmap whose length is not a multiple of four bytes.
//! - Base64 with the standard alphabet and `=` padding (RFC 4648 §4), as Python's
//!   `base64.b64encode` and Node's `Buffer.from(…, 'base64')` read it.

use crate::error::{RequestError, Violation};

/// Bytes per bit: XenAPI's contract for `VDI.list_changed_blocks`.
pub const GRANULARITY: u64 = 64 * 1024;

/// The bytes of the volume a bitmap covers: `[start, end)`, both multiples of
/// [`GRANULARITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first byte covered (bit 0).
    pub start: u64,
    /// The byte after the last one covered.
    pub end: u64,
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(GRANULARITY).saturating_mul(GRANULARITY)
}

fn round_down(bytes: u64) -> u64 {
    bytes / GRANULARITY * GRANULARITY
}

impl Window {
    /// The window `[offset, offset + length)` of a volume of `size` bytes (the larger of
    /// the two compared), widened to whole blocks and cut at the end of the volume; a
    /// negative `length` means "to the end" (what xapi-storage-script sends: 0, -1).
    pub fn of(size: u64, offset: i64, length: i64) -> Result<Window, RequestError> {
        let offset = u64::try_from(offset).map_err(|_| RequestError::Invalid {
            method: "Volume.list_changed_blocks".to_owned(),
            violation: Violation { path: "offset".to_owned(), message: format!("{offset} is negative") },
        })?;
        let volume_end = round_up(size);
        let start = round_down(offset).min(volume_end);
        let end = match u64::try_from(length) {
            Err(_) => volume_end,
            Ok(length) => round_up(offset.saturating_add(length)).min(volume_end),
        };
        Ok(Window { start, end: end.max(start) })
    }

    /// How many bits the bitmap has (before padding).
    pub fn bits(self) -> u64 {
        (self.end - self.start) / GRANULARITY
    }
}

/// The bitmap of `window` with a bit set for every block that `changes` (byte ranges:
/// offset, length) touches, padded with zero bits to whole 32-bit words.
pub fn bitmap(window: Window, changes: impl IntoIterator<Item = (u64, u64)>) -> Vec<u8> {
    let bits = window.bits();
    let bytes = usize::try_from(bits.div_ceil(32) * 4).expect("a bitmap of a volume of at most 1 PiB fits in memory");
    let mut map = vec![0u8; bytes];
    for (offset, length) in changes {
        let first = offset.max(window.start);
        let last = offset.saturating_add(length).min(window.end);
        if first >= last {
            continue;
        }
        let from = (first - window.start) / GRANULARITY;
        let to = (last - window.start).div_ceil(GRANULARITY);
        set_range(&mut map, from, to);
    }
    map
}

/// Sets bits `[from, to)`, most significant bit of each byte first.
fn set_range(map: &mut [u8], from: u64, to: u64) {
    let index = |bit: u64| usize::try_from(bit / 8).expect("bit index fits in memory");
    let mut bit = from;
    while bit < to && !bit.is_multiple_of(8) {
        map[index(bit)] |= 0x80 >> (bit % 8);
        bit += 1;
    }
    let whole = (to - bit) / 8;
    if whole > 0 {
        let first = index(bit);
        let count = usize::try_from(whole).expect("byte count fits in memory");
        map[first..first + count].fill(0xff);
        bit += whole * 8;
    }
    while bit < to {
        map[index(bit)] |= 0x80 >> (bit % 8);
        bit += 1;
    }
}

/// Whether bit `block` of `map` is set (most significant bit first).
pub fn is_set(map: &[u8], block: u64) -> bool {
    usize::try_from(block / 8).ok().and_then(|i| map.get(i)).is_some_and(|byte| byte & (0x80 >> (block % 8)) != 0)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 of `bytes` (standard alphabet, `=` padding).
///
/// ```
/// assert_eq!(common::ops::bitmap::base64(b"foobar"), "Zm9vYmFy");
/// assert_eq!(common::ops::bitmap::base64(&[0xff]), "/w==");
/// ```
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[usize::try_from((n >> shift) & 63).unwrap_or(0)]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of base64 `text` (standard alphabet, padding optional); `None` if it is not
/// base64.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=').as_bytes();
    if text.len() - digits.len() > 2 || digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)?;
            n |= u32::try_from(v).ok()? << (18 - 6 * u32::try_from(i).ok()?);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..chunk.len() - 1]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = GRANULARITY;

    fn set_bits(map: &[u8]) -> Vec<u64> {
        (0..u64::try_from(map.len()).expect("len") * 8).filter(|b| is_set(map, *b)).collect()
    }

    #[test]
    fn extents_are_widened_to_whole_blocks_at_both_ends() {
        let w = Window::of(16 * G, 0, -1).expect("window");
        assert_eq!(w, Window { start: 0, end: 16 * G });
        // One byte; a block exactly; a range straddling two blocks; an empty extent.
        let map = bitmap(w, [(3 * G + 5, 1), (5 * G, G), (7 * G - 1, 2), (9 * G, 0)]);
        assert_eq!(set_bits(&map), [3, 5, 6, 7]);
        // The whole volume.
        assert_eq!(set_bits(&bitmap(w, [(0, 16 * G)])), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn most_significant_bit_first_and_whole_words() {
        let w = Window::of(64 * G, 0, -1).expect("window");
        let map = bitmap(w, [(0, 1), (9 * G, 1), (63 * G, 1)]);
        assert_eq!(map, [0x80, 0x40, 0, 0, 0, 0, 0, 0x01]);
        // 17 blocks need 3 bytes: padded to 4, the extra bits zero.
        let map = bitmap(Window::of(17 * G, 0, -1).expect("window"), [(0, 17 * G)]);
        assert_eq!(map, [0xff, 0xff, 0x80, 0]);
        // A size that is not a multiple of 64 KiB: its last partial block has a bit.
        let w = Window::of(3 * G + 512, 0, -1).expect("window");
        assert_eq!(w.bits(), 4);
        assert_eq!(set_bits(&bitmap(w, [(3 * G + 100, 1)])), [3]);
        // An empty volume window has no bits.
        assert!(bitmap(Window::of(0, 0, -1).expect("window"), [(0, 10)]).is_empty());
    }

    #[test]
    fn grown_volume_is_covered_to_its_new_end() {
        // S1 was 4 blocks, S2 is 10: the bitmap is sized to the larger one, and changes
        // past S1's end (written after the resize) are flagged; the grown area that was
        // never written is not (it reads as zeros on both sides).
        let w = Window::of(10 * G, 0, -1).expect("window");
        let map = bitmap(w, [(G, 10), (8 * G, 3 * G)]);
        assert_eq!(set_bits(&map), [1, 8, 9]);
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn offset_and_length_select_a_window() {
        let size = 100 * G;
        // Widened at both ends: bit 0 is the block holding `offset`.
        let w = Window::of(size, i64::try_from(10 * G + 7).expect("i64"), i64::try_from(2 * G).expect("i64"))
            .expect("window");
        assert_eq!(w, Window { start: 10 * G, end: 13 * G });
        assert_eq!(set_bits(&bitmap(w, [(0, 11 * G), (12 * G + 1, 1), (50 * G, G)])), [0, 2]);
        // Past the end: cut at the end of the volume, or empty.
        let w = Window::of(size, i64::try_from(99 * G).expect("i64"), i64::MAX).expect("window");
        assert_eq!(w, Window { start: 99 * G, end: 100 * G });
        let w = Window::of(size, i64::try_from(200 * G).expect("i64"), 5).expect("window");
        assert_eq!(w.bits(), 0);
        assert!(Window::of(size, -1, -1).is_err());
        // Extents beyond the window are ignored, not wrapped.
        let w = Window::of(size, 0, i64::try_from(2 * G).expect("i64")).expect("window");
        assert_eq!(set_bits(&bitmap(w, [(5 * G, u64::MAX)])), Vec::<u64>::new());
    }

    #[test]
    fn a_two_tebibyte_volume_fully_changed() {
        let size = 2u64 << 40;
        let w = Window::of(size, 0, -1).expect("window");
        assert_eq!(w.bits(), 1 << 25);
        let map = bitmap(w, [(0, size)]);
        assert_eq!(map.len(), 4 << 20);
        assert!(map.iter().all(|b| *b == 0xff));
    }

    #[test]
    fn base64_round_trips() {
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 0xff, 0x80, 0x7f]] {
            let text = base64(bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(unbase64(&text).as_deref(), Some(bytes), "{text}");
        }
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(unbase64("Zm9v!"), None);
        assert_eq!(unbase64("Z"), None);
    }
}
