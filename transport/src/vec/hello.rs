//! The VEC hello line: `VEC_DRAFT-0.8\n` or `VEC_DRAFT-0.8-<codec>\n`.
//!
//! Each side sends its line first thing on the stream (right after the VOP
//! reply, or at once on internal links); the codec it names becomes the
//! default for strings the sender writes without an explicit codec. The
//! line is at most 32 bytes.

use super::string_codec::Codec;
use crate::Error;

/// The longest hello line accepted, newline included.
pub const MAX_HELLO: usize = 32;

/// The hello line this side sends for the given default codec.
pub fn line(codec: Option<Codec>) -> Vec<u8> {
    match codec {
        Some(c) => format!("VEC_DRAFT-0.8-{}\n", c.wire_name()).into_bytes(),
        None => b"VEC_DRAFT-0.8\n".to_vec(),
    }
}

/// Looks for a complete hello line at the front of `buf`.
///
/// Returns `Ok(None)` if no newline has arrived yet (and the buffer is still
/// within the length cap), otherwise the peer's codec and the number of bytes
/// the line took; the bytes after it are the first entities.
pub fn parse(buf: &[u8]) -> Result<Option<(Option<Codec>, usize)>, Error> {
    let window = &buf[..buf.len().min(MAX_HELLO)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_HELLO {
            return Err(Error::BadVecHello(format!(
                "no newline within {MAX_HELLO} bytes"
            )));
        }
        return Ok(None);
    };
    let text = &buf[..nl];
    let bad = |why: &str| Error::BadVecHello(format!("{why}: {:?}", String::from_utf8_lossy(text)));
    let mut parts = text.split(|&b| b == b'-');
    let name = parts.next().unwrap_or_default();
    let version = parts.next().ok_or_else(|| bad("missing version"))?;
    let codec = parts.next();
    if parts.next().is_some() {
        return Err(bad("too many fields"));
    }
    if name != b"VEC_DRAFT" {
        return Err(bad("not a VEC hello"));
    }
    if version != b"0.8" {
        return Err(bad("unsupported VEC version"));
    }
    let codec = match codec {
        None => None,
        Some(name) => match Codec::from_name(name) {
            Some(c) if c.allowed_in_hello() && (name == b"utf8" || name == b"utf16") => Some(c),
            _ => return Err(bad("unsupported default codec")),
        },
    };
    Ok(Some((codec, nl + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_vpy() {
        assert_eq!(line(Some(Codec::Utf8)), b"VEC_DRAFT-0.8-utf8\n");
        assert_eq!(line(None), b"VEC_DRAFT-0.8\n");
    }

    #[test]
    fn parses_complete_lines_and_reports_consumed_bytes() {
        assert_eq!(
            parse(b"VEC_DRAFT-0.8-utf8\n\xf8").expect("ok"),
            Some((Some(Codec::Utf8), 19))
        );
        assert_eq!(parse(b"VEC_DRAFT-0.8\n").expect("ok"), Some((None, 14)));
        assert_eq!(
            parse(b"VEC_DRAFT-0.8-utf16\n").expect("ok"),
            Some((Some(Codec::Utf16), 20))
        );
    }

    #[test]
    fn waits_for_the_newline() {
        let full = b"VEC_DRAFT-0.8-utf8\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).expect("prefix"), None);
        }
    }

    #[test]
    fn refuses_bad_lines() {
        for bad in [
            &b"VEC_DRAFT-0.9\n"[..],
            b"VOP_DRAFT-0.8\n",
            b"VEC_DRAFT\n",
            b"VEC_DRAFT-0.8-latin1\n",
            b"VEC_DRAFT-0.8-utf8-x\n",
            b"GET / HTTP/1.1\r\n",
            &[b'A'; 40],
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
