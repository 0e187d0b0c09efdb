//! [`Codec`], the string codecs VEC can name: in the hello line (the
//! default for strings sent without one) and on strings with an explicit
//! codec.

/// A string codec that VEC can name.
///
/// The VEC hello may declare `utf8` or `utf16` as the default codec for
/// strings sent without one. Strings with an explicit codec may also name the
/// common aliases VPy's Python codec lookup accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// UTF-8 (`utf8`).
    Utf8,
    /// UTF-16 with an optional byte-order mark, little-endian without one
    /// (`utf16`).
    Utf16,
    /// UTF-16, little-endian, no byte-order mark.
    Utf16Le,
    /// UTF-16, big-endian, no byte-order mark.
    Utf16Be,
    /// ISO-8859-1.
    Latin1,
    /// 7-bit ASCII.
    Ascii,
}

impl Codec {
    /// Looks up a codec name the way Python's codec registry normalizes it
    /// (case-insensitive, `-` and `_` ignored).
    pub fn from_name(name: &[u8]) -> Option<Codec> {
        let norm: Vec<u8> = name
            .iter()
            .filter(|b| **b != b'-' && **b != b'_')
            .map(u8::to_ascii_lowercase)
            .collect();
        Some(match norm.as_slice() {
            b"utf8" | b"u8" => Codec::Utf8,
            b"utf16" | b"u16" => Codec::Utf16,
            b"utf16le" => Codec::Utf16Le,
            b"utf16be" => Codec::Utf16Be,
            b"latin1" | b"iso88591" | b"l1" => Codec::Latin1,
            b"ascii" | b"usascii" => Codec::Ascii,
            _ => return None,
        })
    }

    /// The name used on the wire (`utf8`, `utf16`, ...).
    pub fn wire_name(self) -> &'static str {
        match self {
            Codec::Utf8 => "utf8",
            Codec::Utf16 => "utf16",
            Codec::Utf16Le => "utf-16-le",
            Codec::Utf16Be => "utf-16-be",
            Codec::Latin1 => "latin-1",
            Codec::Ascii => "ascii",
        }
    }

    /// Whether a VEC hello may declare this codec (VPy accepts `utf8` and
    /// `utf16` only).
    pub fn allowed_in_hello(self) -> bool {
        matches!(self, Codec::Utf8 | Codec::Utf16)
    }

    /// Decodes `data` in this codec.
    pub fn decode(self, data: &[u8]) -> Result<String, crate::Error> {
        let bad = || crate::Error::InvalidString {
            codec: self.wire_name(),
        };
        match self {
            Codec::Utf8 => simdutf8::basic::from_utf8(data)
                .map(str::to_owned)
                .map_err(|_| bad()),
            Codec::Ascii => {
                if data.is_ascii() {
                    // ASCII is valid UTF-8.
                    std::str::from_utf8(data)
                        .map(str::to_owned)
                        .map_err(|_| bad())
                } else {
                    Err(bad())
                }
            }
            Codec::Latin1 => Ok(data.iter().map(|&b| char::from(b)).collect()),
            Codec::Utf16 | Codec::Utf16Le | Codec::Utf16Be => {
                if !data.len().is_multiple_of(2) {
                    return Err(bad());
                }
                let (mut big_endian, mut body) = (self == Codec::Utf16Be, data);
                if self == Codec::Utf16 {
                    match data {
                        [0xff, 0xfe, rest @ ..] => body = rest,
                        [0xfe, 0xff, rest @ ..] => {
                            big_endian = true;
                            body = rest;
                        }
                        _ => {}
                    }
                }
                let units = body.chunks_exact(2).map(|c| {
                    if big_endian {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                });
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .map_err(|_| bad())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Codec;

    #[test]
    fn codec_names_normalize_like_python() {
        assert_eq!(Codec::from_name(b"utf8"), Some(Codec::Utf8));
        assert_eq!(Codec::from_name(b"UTF-8"), Some(Codec::Utf8));
        assert_eq!(Codec::from_name(b"utf_16"), Some(Codec::Utf16));
        assert_eq!(Codec::from_name(b"latin-1"), Some(Codec::Latin1));
        assert_eq!(Codec::from_name(b"koi8-r"), None);
    }

    #[test]
    fn utf16_decodes_with_and_without_bom() {
        assert_eq!(
            Codec::Utf16
                .decode(&[0xff, 0xfe, b'h', 0, 0xe9, 0])
                .expect("ok"),
            "hé"
        );
        assert_eq!(
            Codec::Utf16.decode(&[0xfe, 0xff, 0, b'h']).expect("ok"),
            "h"
        );
        assert_eq!(Codec::Utf16.decode(&[b'h', 0]).expect("ok"), "h");
        assert!(Codec::Utf16.decode(b"h").is_err());
        assert!(
            Codec::Utf16Le.decode(&[0x00, 0xd8]).is_err(),
            "lone surrogate"
        );
    }

    #[test]
    fn invalid_text_is_an_error() {
        assert!(Codec::Utf8.decode(&[0xc3, 0x28]).is_err());
        assert!(Codec::Ascii.decode(&[0x80]).is_err());
        assert_eq!(Codec::Latin1.decode(&[0xe9]).expect("ok"), "é");
    }
}
