//! Versile resource identifiers (VRIs): parsing and formatting only.
//!
//! A VRI names a resource behind a Versile gateway:
//!
//! ```text
//! vop://host[:port]/seg1/seg2/[name[?arg&arg&key=value]]
//! ```
//!
//! This module owns the syntax: [`Vri`] (a full VRI, parsed with
//! [`str::parse`] and formatted with `Display`), [`parse_relative`] and
//! [`format_relative`] for the path-and-query part used on an existing link,
//! and [`UriError`]. Connecting and resolving (the gateway's `urlget` call
//! and the query call) live elsewhere.
//!
//! # Grammar
//!
//! * **Scheme:** only `vop`, in any letter case. The port defaults to
//!   [`DEFAULT_PORT`] (4433); an explicit port is `1..=65535` in ASCII
//!   digits.
//! * **Host:** a DNS-style name (ASCII letters, digits, `-`, `_`, `.`; stored
//!   lower-cased; an optional final `.`), a dotted IPv4 address, or an IPv6
//!   address in brackets (`[::1]`). A name whose last label is all digits
//!   must be a valid IPv4 address. User information (`user@`) and zone
//!   identifiers are rejected.
//! * **Path:** each segment ends with `/`. A last part *without* a trailing
//!   `/` is the query name. `vop://host` and `vop://host/` both have the
//!   empty path and no query: they name the gateway itself. Segments and the
//!   name are percent-decoded to UTF-8 and must not be empty (`//` is an
//!   error), so an encoded `%2F` is an ordinary character inside a segment.
//! * **Query:** `name?a1&a2&k=v`. `name` alone, or `name?`, is a call with
//!   no arguments. Items are split on raw `&`; an item with a raw `=` is a
//!   keyword argument (exactly one raw `=`; keywords are non-empty and
//!   unique), any other item is positional. Keys and values are
//!   percent-decoded first, then a value is typed by its prefix: `int:`
//!   (decimal, optional sign, any size), `bool:` (exactly `True` or
//!   `False`), `str:` (the rest is a string). Any other value, including
//!   one with an unknown prefix such as `http:`, is a string as written.
//!   Positional and keyword items may be interleaved.
//! * Space, control characters and `#` (fragments) are rejected anywhere;
//!   other characters, including non-ASCII ones, may appear raw.
//!
//! `Display` writes a canonical form that parses back to an equal value:
//! lower-case scheme, no port when it is the default, every byte outside
//! `A-Z a-z 0-9 - . _ ~` percent-encoded, `str:` added to a string value
//! that contains `:` (or an empty positional string), booleans as
//! `bool:True`/`bool:False`.
//!
//! # Differences from VPy (versile-python3 0.8.5, `versile.orb.url`)
//!
//! Checked by running VPy's `VUrlData` parser:
//!
//! * VPy silently drops every query argument (`urlparse` moves `?…` out of
//!   the path it reads), so `…/echo?hello` calls `echo()`. vole parses them.
//! * VPy does not percent-decode the query name (`n%3Fx` stays `n%3Fx`);
//!   vole decodes it like a segment.
//! * VPy rejects `vop://host` (no `/`); vole reads it as `vop://host/`.
//! * VPy's value typing strips an unknown prefix (`foo:bar` becomes `bar`,
//!   `http://x` becomes `//x`) although its documentation says such values
//!   are kept as-is; vole keeps them as-is.
//! * VPy's `int:` uses Python's `int()`, which also takes surrounding
//!   spaces, `_` separators and non-ASCII digits; vole takes only an
//!   optional sign and ASCII digits. `bool:` matches VPy (case-sensitive
//!   `True`/`False`).
//! * VPy keeps the last of duplicate keywords; vole rejects duplicates.
//! * VPy passes invalid percent-escapes (`a%zz`) through and replaces
//!   invalid UTF-8 with U+FFFD; vole rejects both.
//! * VPy accepts hosts such as `a:b`, `user@host` and raw spaces in
//!   segments; vole rejects them. VPy drops a `#fragment`; vole rejects it.
//! * VPy's relative form must start with `/`; [`parse_relative`] also
//!   accepts `a/b/name` without it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use num_bigint::BigInt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use vole_transport::Entity;

/// The only VRI scheme.
pub const SCHEME: &str = "vop";

/// The port used when a VRI names none (VPy's `_VopUrl` default).
pub const DEFAULT_PORT: u16 = 4433;

/// Bytes written raw by `Display`: the RFC 3986 unreserved set. Everything
/// else is percent-encoded, which keeps the canonical form ASCII and free of
/// every delimiter the parser splits on.
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The longest host name accepted, without a final `.` (DNS limit).
const MAX_NAME_LEN: usize = 253;

/// The longest label of a host name (DNS limit).
const MAX_LABEL_LEN: usize = 63;

/// Why a VRI or a relative VRI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The input does not start with a scheme (`vop:`).
    #[error("missing scheme (expected \"vop://\")")]
    MissingScheme,
    /// The scheme is not `vop`.
    #[error("unsupported scheme {0:?} (only \"vop\" is supported)")]
    UnsupportedScheme(String),
    /// The scheme is not followed by `//`.
    #[error("expected \"//\" after \"{0}:\"")]
    MissingAuthority(String),
    /// Nothing between `//` and the path.
    #[error("missing host")]
    MissingHost,
    /// The host is not a valid name, IPv4 or bracketed IPv6 address.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host part as written.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The port is not a number in `1..=65535`.
    #[error("invalid port {0:?} (expected a number from 1 to 65535)")]
    InvalidPort(String),
    /// A character that must be percent-encoded appears raw.
    #[error("character {ch:?} at byte {pos} must be percent-encoded")]
    IllegalChar {
        /// The character.
        ch: char,
        /// Its byte offset in the input.
        pos: usize,
    },
    /// The input has a `#fragment`, which VRIs do not have.
    #[error("fragments are not supported (found {0:?}); encode '#' as %23")]
    Fragment(String),
    /// Two slashes in a row (or a leading `//` in a relative VRI).
    #[error("empty path segment in {0:?}")]
    EmptySegment(String),
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in {0:?} ('%' must be followed by two hex digits)")]
    InvalidPercentEncoding(String),
    /// Percent-decoding gives bytes that are not UTF-8.
    #[error("{0:?} does not percent-decode to UTF-8")]
    NotUtf8(String),
    /// A `?` with no query name before it (the path ends with `/`).
    #[error("query arguments {0:?} without a query name")]
    MissingQueryName(String),
    /// A malformed query item: empty, empty keyword or more than one `=`.
    #[error("invalid query argument {arg:?}: {reason}")]
    InvalidArgument {
        /// The offending item (the whole query for an empty item).
        arg: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A typed value whose text does not fit its type (`int:abc`).
    #[error("invalid typed value {value:?}: {reason}")]
    InvalidValue {
        /// The decoded value, prefix included.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The same keyword twice.
    #[error("duplicate keyword argument {0:?}")]
    DuplicateKeyword(String),
}

/// The host part of a VRI.
///
/// `Display` writes it as it appears in a VRI (IPv6 in brackets), which is
/// also the form `format!("{host}:{port}")` needs for a socket address
/// lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower-cased.
    Name(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ipv4(addr) => write!(f, "{addr}"),
            Host::Ipv6(addr) => write!(f, "[{addr}]"),
        }
    }
}

impl FromStr for Host {
    type Err = UriError;

    /// Parses a host as written in a VRI: a name, an IPv4 address or a
    /// bracketed IPv6 address.
    fn from_str(s: &str) -> Result<Self, UriError> {
        if s.is_empty() {
            return Err(UriError::MissingHost);
        }
        let invalid = |reason| UriError::InvalidHost {
            host: s.to_owned(),
            reason,
        };
        if let Some(inner) = s.strip_prefix('[') {
            let addr = inner
                .strip_suffix(']')
                .ok_or_else(|| invalid("'[' without a closing ']'"))?;
            return addr
                .parse()
                .map(Host::Ipv6)
                .map_err(|_| invalid("not a valid IPv6 address"));
        }
        if let Ok(addr) = s.parse() {
            return Ok(Host::Ipv4(addr));
        }
        if s.contains('@') {
            return Err(invalid("user information ('@') is not supported"));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("name longer than 253 characters"));
        }
        let mut last_label = "";
        for label in name.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(invalid("label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "only ASCII letters, digits, '-', '_' and '.' are allowed in a name",
                ));
            }
            last_label = label;
        }
        if last_label.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("looks like an IPv4 address but is not a valid one"));
        }
        Ok(Host::Name(s.to_ascii_lowercase()))
    }
}

/// A parsed VRI: where to connect, which resource, and an optional call.
///
/// Parse with [`str::parse`]; `Display` gives the canonical form, which
/// parses back to an equal `Vri` provided the value keeps the parser's
/// invariants (a host name as [`Host`]'s parser accepts it, non-empty
/// segments and query name, unique keywords).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vri {
    /// The host to connect to.
    pub host: Host,
    /// The port ([`DEFAULT_PORT`] when the VRI names none).
    pub port: u16,
    /// The decoded path segments passed to the gateway's `urlget`; empty
    /// for the gateway itself.
    pub path: Vec<String>,
    /// The call to make on the resolved resource, if any.
    pub query: Option<Query>,
}

/// The query part of a VRI: a method name and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The decoded method name (never empty when parsed).
    pub name: String,
    /// Positional arguments, in order.
    pub args: Vec<QueryValue>,
    /// Keyword arguments, in the order written, keywords unique.
    pub kwargs: Vec<(String, QueryValue)>,
}

impl Query {
    /// A call of `name` with no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Query {
            name: name.into(),
            args: Vec::new(),
            kwargs: Vec::new(),
        }
    }
}

/// A query argument value: untyped or `str:` values are strings, `int:` and
/// `bool:` values are typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueryValue {
    /// A string.
    Str(String),
    /// An integer of any size.
    Int(BigInt),
    /// A boolean.
    Bool(bool),
}

impl QueryValue {
    /// The value as a call argument entity (integers take the `i64` fast
    /// path when they fit).
    pub fn to_entity<R>(&self) -> Entity<R> {
        match self {
            QueryValue::Str(s) => Entity::Str(s.clone()),
            QueryValue::Int(i) => Entity::int(i.clone()),
            QueryValue::Bool(b) => Entity::Bool(*b),
        }
    }
}

impl From<&str> for QueryValue {
    fn from(value: &str) -> Self {
        QueryValue::Str(value.to_owned())
    }
}

impl From<String> for QueryValue {
    fn from(value: String) -> Self {
        QueryValue::Str(value)
    }
}

impl From<BigInt> for QueryValue {
    fn from(value: BigInt) -> Self {
        QueryValue::Int(value)
    }
}

impl From<i64> for QueryValue {
    fn from(value: i64) -> Self {
        QueryValue::Int(value.into())
    }
}

impl From<bool> for QueryValue {
    fn from(value: bool) -> Self {
        QueryValue::Bool(value)
    }
}

impl FromStr for Vri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        check_chars(s)?;
        let (scheme, rest) = s.split_once(':').ok_or(UriError::MissingScheme)?;
        if !is_scheme(scheme) {
            return Err(UriError::MissingScheme);
        }
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(UriError::UnsupportedScheme(scheme.to_owned()));
        }
        let rest = rest
            .strip_prefix("//")
            .ok_or_else(|| UriError::MissingAuthority(scheme.to_owned()))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (host, port) = parse_authority(authority)?;
        let (path, query) = parse_path_query(tail)?;
        Ok(Vri {
            host,
            port,
            path,
            query,
        })
    }
}

impl fmt::Display for Vri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}", self.host)?;
        if self.port != DEFAULT_PORT {
            write!(f, ":{}", self.port)?;
        }
        write_relative(f, &self.path, self.query.as_ref())
    }
}

/// Parses the path-and-query part of a VRI, for use on an existing link
/// (VPy's `VUrl.relative`): `/a/b/`, `/a/b/name?x&k=v`, or the same
/// without the leading `/`. `""` and `"/"` are the empty path.
pub fn parse_relative(s: &str) -> Result<(Vec<String>, Option<Query>), UriError> {
    check_chars(s)?;
    parse_path_query(s)
}

/// Formats a path and query in canonical relative form, always with a
/// leading `/` (the form VPy's `VUrl.relative` requires); the inverse of
/// [`parse_relative`].
pub fn format_relative(path: &[String], query: Option<&Query>) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_relative(&mut out, path, query);
    out
}

/// Rejects characters that may never appear raw, and fragments.
fn check_chars(s: &str) -> Result<(), UriError> {
    for (pos, ch) in s.char_indices() {
        if ch == '#' {
            return Err(UriError::Fragment(s[pos..].to_owned()));
        }
        if ch == ' ' || ch.is_control() {
            return Err(UriError::IllegalChar { ch, pos });
        }
    }
    Ok(())
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Splits `host[:port]` and parses both halves.
fn parse_authority(authority: &str) -> Result<(Host, u16), UriError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(close) => {
                let (host, after) = authority.split_at(close + 1);
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => {
                            return Err(UriError::InvalidHost {
                                host: authority.to_owned(),
                                reason: "unexpected characters after ']'",
                            })
                        }
                    },
                }
            }
            None => (authority, None),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host = host.parse()?;
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => parse_port(port)?,
    };
    Ok((host, port))
}

fn parse_port(s: &str) -> Result<u16, UriError> {
    let invalid = || UriError::InvalidPort(s.to_owned());
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(port) => Ok(port),
    }
}

/// Parses `[/]seg/seg/[name[?args]]` (characters already checked).
fn parse_path_query(s: &str) -> Result<(Vec<String>, Option<Query>), UriError> {
    let (path_part, args) = match s.split_once('?') {
        Some((path, args)) => (path, Some(args)),
        None => (s, None),
    };
    let rel = path_part.strip_prefix('/').unwrap_or(path_part);
    let (segments, name) = match rel.rsplit_once('/') {
        Some((segments, name)) => (Some(segments), name),
        None => (None, rel),
    };
    let mut path = Vec::new();
    for segment in segments.into_iter().flat_map(|s| s.split('/')) {
        if segment.is_empty() {
            return Err(UriError::EmptySegment(path_part.to_owned()));
        }
        path.push(decode(segment)?);
    }
    if name.is_empty() {
        return match args {
            Some(args) => Err(UriError::MissingQueryName(format!("?{args}"))),
            None => Ok((path, None)),
        };
    }
    let mut query = Query::new(decode(name)?);
    if let Some(args) = args {
        parse_args(args, &mut query)?;
    }
    Ok((path, Some(query)))
}

/// Parses the `&`-separated items after `?` into `query`.
fn parse_args(args: &str, query: &mut Query) -> Result<(), UriError> {
    if args.is_empty() {
        return Ok(());
    }
    for item in args.split('&') {
        if item.is_empty() {
            return Err(UriError::InvalidArgument {
                arg: args.to_owned(),
                reason: "empty argument (use \"str:\" for an empty string)",
            });
        }
        match item.split_once('=') {
            None => query.args.push(typed(decode(item)?)?),
            Some((key, value)) => {
                if value.contains('=') {
                    return Err(UriError::InvalidArgument {
                        arg: item.to_owned(),
                        reason: "more than one '=' (encode '=' in a value as %3D)",
                    });
                }
                let key = decode(key)?;
                if key.is_empty() {
                    return Err(UriError::InvalidArgument {
                        arg: item.to_owned(),
                        reason: "empty keyword",
                    });
                }
                if query.kwargs.iter().any(|(k, _)| *k == key) {
                    return Err(UriError::DuplicateKeyword(key));
                }
                let value = typed(decode(value)?)?;
                query.kwargs.push((key, value));
            }
        }
    }
    Ok(())
}

/// Applies the `str:`/`int:`/`bool:` prefix of a decoded value.
fn typed(value: String) -> Result<QueryValue, UriError> {
    match value.split_once(':') {
        Some(("str", rest)) => Ok(QueryValue::Str(rest.to_owned())),
        Some(("int", rest)) => match parse_int(rest) {
            Some(i) => Ok(QueryValue::Int(i)),
            None => Err(UriError::InvalidValue {
                value,
                reason: "expected a decimal integer after \"int:\"",
            }),
        },
        Some(("bool", "True")) => Ok(QueryValue::Bool(true)),
        Some(("bool", "False")) => Ok(QueryValue::Bool(false)),
        Some(("bool", _)) => Err(UriError::InvalidValue {
            value,
            reason: "expected \"True\" or \"False\" after \"bool:\"",
        }),
        _ => Ok(QueryValue::Str(value)),
    }
}

/// An optional sign and one or more ASCII digits.
fn parse_int(s: &str) -> Option<BigInt> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = BigInt::parse_bytes(digits.as_bytes(), 10)?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Strict percent-decoding to UTF-8.
fn decode(raw: &str) -> Result<String, UriError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| Some((hex_value(hex[0])? << 4) | hex_value(hex[1])?))
                .ok_or_else(|| UriError::InvalidPercentEncoding(raw.to_owned()))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::NotUtf8(raw.to_owned()))
}

fn hex_value(b: u8) -> Option<u8> {
    // A hex digit is at most 15, so the narrowing cannot truncate.
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Writes `/seg/…/[name[?args]]` in canonical form.
fn write_relative(
    out: &mut impl fmt::Write,
    path: &[String],
    query: Option<&Query>,
) -> fmt::Result {
    out.write_char('/')?;
    for segment in path {
        write!(out, "{}/", utf8_percent_encode(segment, ENCODE_SET))?;
    }
    let Some(query) = query else {
        return Ok(());
    };
    write!(out, "{}", utf8_percent_encode(&query.name, ENCODE_SET))?;
    let mut sep = '?';
    for value in &query.args {
        out.write_char(sep)?;
        sep = '&';
        write_value(out, value, true)?;
    }
    for (key, value) in &query.kwargs {
        out.write_char(sep)?;
        sep = '&';
        write!(out, "{}=", utf8_percent_encode(key, ENCODE_SET))?;
        write_value(out, value, false)?;
    }
    Ok(())
}

/// Writes one value so that [`typed`] reads it back unchanged.
fn write_value(out: &mut impl fmt::Write, value: &QueryValue, positional: bool) -> fmt::Result {
    match value {
        QueryValue::Int(i) => write!(out, "int:{i}"),
        QueryValue::Bool(true) => out.write_str("bool:True"),
        QueryValue::Bool(false) => out.write_str("bool:False"),
        QueryValue::Str(s) => {
            // A ':' could read as a type prefix (here or in a parser that,
            // like VPy's, treats unknown prefixes differently), and an empty
            // positional item is not allowed: say "str:" explicitly.
            if s.contains(':') || (positional && s.is_empty()) {
                out.write_str("str:")?;
            }
            write!(out, "{}", utf8_percent_encode(s, ENCODE_SET))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vole_transport::WireRef;

    fn vri(s: &str) -> Vri {
        match s.parse() {
            Ok(v) => v,
            Err(e) => panic!("{s:?} did not parse: {e}"),
        }
    }

    fn err(s: &str) -> UriError {
        match s.parse::<Vri>() {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    fn strs(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }

    fn int(i: i64) -> QueryValue {
        QueryValue::Int(i.into())
    }

    fn s(v: &str) -> QueryValue {
        QueryValue::Str(v.into())
    }

    // ---- hosts and ports ----

    #[test]
    fn plain_host_without_slash_is_the_gateway() {
        let v = vri("vop://example.com");
        assert_eq!(v.host, name("example.com"));
        assert_eq!(v.port, DEFAULT_PORT);
        assert!(v.path.is_empty());
        assert_eq!(v.query, None);
        assert_eq!(v, vri("vop://example.com/"));
        assert_eq!(v.to_string(), "vop://example.com/");
    }

    #[test]
    fn scheme_and_name_are_case_insensitive() {
        let v = vri("VOP://Example.COM:99/a/");
        assert_eq!(v.host, name("example.com"));
        assert_eq!(v.port, 99);
        assert_eq!(v.to_string(), "vop://example.com:99/a/");
    }

    #[test]
    fn ports() {
        assert_eq!(vri("vop://h:1/").port, 1);
        assert_eq!(vri("vop://h:65535/").port, 65535);
        // The default port is not written back.
        assert_eq!(vri("vop://h:4433/").to_string(), "vop://h/");
        assert_eq!(vri("vop://h:4433/"), vri("vop://h/"));
    }

    #[test]
    fn bad_ports() {
        for (input, port) in [
            ("vop://h:/", ""),
            ("vop://h:abc/", "abc"),
            ("vop://h:0/", "0"),
            ("vop://h:65536/", "65536"),
            ("vop://h:+80/", "+80"),
            ("vop://h:99999999999999999999/", "99999999999999999999"),
            ("vop://h:80:81/", "80:81"),
            ("vop://a:b:80/", "b:80"),
            ("vop://[::1]:x/", "x"),
        ] {
            assert_eq!(err(input), UriError::InvalidPort(port.into()), "{input}");
        }
    }

    #[test]
    fn ipv4_and_ipv6_hosts() {
        let v = vri("vop://127.0.0.1:80/a/");
        assert_eq!(v.host, Host::Ipv4(Ipv4Addr::LOCALHOST));
        assert_eq!(v.to_string(), "vop://127.0.0.1:80/a/");

        let v = vri("vop://[::1]/a/");
        assert_eq!(v.host, Host::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(v.port, DEFAULT_PORT);
        assert_eq!(v.path, strs(&["a"]));

        let v = vri("vop://[2001:DB8:0:0::1]:8080");
        assert_eq!(v.port, 8080);
        assert_eq!(v.to_string(), "vop://[2001:db8::1]:8080/");
        assert_eq!(format!("{}:{}", v.host, v.port), "[2001:db8::1]:8080");
    }

    #[test]
    fn host_names() {
        for host in ["a", "my-host_1.example.org", "example.com.", "x.y2k", "a1"] {
            assert_eq!(host.parse::<Host>(), Ok(name(host)), "{host}");
        }
        let long_label = format!("{}.com", "a".repeat(63));
        assert!(long_label.parse::<Host>().is_ok());
    }

    #[test]
    fn bad_hosts() {
        let reason = |input: &str| match err(input) {
            UriError::InvalidHost { host, reason } => (host, reason),
            other => panic!("{input}: {other:?}"),
        };
        for (input, host) in [
            ("vop://user@host/", "user@host"),
            ("vop://[::1/", "[::1"),
            ("vop://[::1]x/", "[::1]x"),
            ("vop://[::g]/", "[::g]"),
            ("vop://[fe80::1%25eth0]/", "[fe80::1%25eth0]"),
            ("vop://1.2.3.256/", "1.2.3.256"),
            ("vop://123/", "123"),
            ("vop://01.2.3.4/", "01.2.3.4"),
            ("vop://a..b/", "a..b"),
            ("vop://.a/", ".a"),
            ("vop://a../", "a.."),
            ("vop://h%41/", "h%41"),
            ("vop://h\u{e6}st/", "h\u{e6}st"),
        ] {
            assert_eq!(reason(input).0, host, "{input}");
        }
        let long_label = format!("vop://{}.com/", "a".repeat(64));
        assert_eq!(reason(&long_label).1, "label longer than 63 characters");
        let long_name = format!("vop://{}a/", "a.".repeat(127));
        assert_eq!(reason(&long_name).1, "name longer than 253 characters");
    }

    #[test]
    fn missing_host() {
        assert_eq!(err("vop:///a/"), UriError::MissingHost);
        assert_eq!(err("vop://:80/"), UriError::MissingHost);
        assert_eq!(err("vop://"), UriError::MissingHost);
        assert_eq!("".parse::<Host>(), Err(UriError::MissingHost));
    }

    #[test]
    fn schemes() {
        assert_eq!(err("http://h/"), UriError::UnsupportedScheme("http".into()));
        assert_eq!(err("vops://h/"), UriError::UnsupportedScheme("vops".into()));
        assert_eq!(err("h/a/"), UriError::MissingScheme);
        assert_eq!(err(""), UriError::MissingScheme);
        assert_eq!(err("://h/"), UriError::MissingScheme);
        assert_eq!(err("[::1]:80/"), UriError::MissingScheme);
        assert_eq!(err("vop:h/a/"), UriError::MissingAuthority("vop".into()));
        assert_eq!(err("VOP:/h/"), UriError::MissingAuthority("VOP".into()));
    }

    // ---- paths ----

    #[test]
    fn path_segments() {
        let v = vri("vop://h/text/echo/");
        assert_eq!(v.path, strs(&["text", "echo"]));
        assert_eq!(v.query, None);
        assert_eq!(v.to_string(), "vop://h/text/echo/");
    }

    #[test]
    fn trailing_name_is_a_zero_argument_query() {
        let v = vri("vop://h/math/adder/result");
        assert_eq!(v.path, strs(&["math", "adder"]));
        assert_eq!(v.query, Some(Query::new("result")));
        // A bare '?' is the same call.
        assert_eq!(vri("vop://h/math/adder/result?"), v);
        assert_eq!(v.to_string(), "vop://h/math/adder/result");
        // A name directly under the gateway.
        let v = vri("vop://h/ping");
        assert!(v.path.is_empty());
        assert_eq!(v.query, Some(Query::new("ping")));
    }

    #[test]
    fn percent_encoded_segments() {
        let v = vri("vop://h/a%2Fb/%3F%26%3D/n%3Fx");
        assert_eq!(v.path, strs(&["a/b", "?&="]));
        assert_eq!(v.query, Some(Query::new("n?x")));
        assert_eq!(v.to_string(), "vop://h/a%2Fb/%3F%26%3D/n%3Fx");
        // Lower-case hex and encoded unreserved characters decode too.
        assert_eq!(vri("vop://h/%2f%41/").path, strs(&["/A"]));
        assert_eq!(vri("vop://h/%2f%41/").to_string(), "vop://h/%2FA/");
    }

    #[test]
    fn utf8_segments() {
        let v = vri("vop://h/%C3%A6%C3%B8/\u{e5}/na%20me");
        assert_eq!(v.path, strs(&["\u{e6}\u{f8}", "\u{e5}"]));
        assert_eq!(v.query, Some(Query::new("na me")));
        assert_eq!(v.to_string(), "vop://h/%C3%A6%C3%B8/%C3%A5/na%20me");
    }

    #[test]
    fn raw_reserved_characters_in_segments() {
        // Characters outside the unreserved set are accepted raw and
        // written back encoded.
        let v = vri("vop://h/a:b@c/x=y&z/");
        assert_eq!(v.path, strs(&["a:b@c", "x=y&z"]));
        assert_eq!(v.to_string(), "vop://h/a%3Ab%40c/x%3Dy%26z/");
    }

    #[test]
    fn empty_segments() {
        assert_eq!(
            err("vop://h/a//b/"),
            UriError::EmptySegment("/a//b/".into())
        );
        assert_eq!(err("vop://h//"), UriError::EmptySegment("//".into()));
        assert_eq!(err("vop://h//a/"), UriError::EmptySegment("//a/".into()));
        assert_eq!(
            err("vop://h/a//n?x"),
            UriError::EmptySegment("/a//n".into())
        );
    }

    #[test]
    fn bad_percent_encoding() {
        for (input, part) in [
            ("vop://h/a%zz/", "a%zz"),
            ("vop://h/a%/", "a%"),
            ("vop://h/a%4/", "a%4"),
            ("vop://h/n%g0", "n%g0"),
            ("vop://h/n?x%2", "x%2"),
            ("vop://h/n?k%=1", "k%"),
            ("vop://h/n?k=%%", "%%"),
        ] {
            assert_eq!(
                err(input),
                UriError::InvalidPercentEncoding(part.into()),
                "{input}"
            );
        }
    }

    #[test]
    fn non_utf8_after_decoding() {
        assert_eq!(err("vop://h/%FF/"), UriError::NotUtf8("%FF".into()));
        assert_eq!(err("vop://h/n%C3"), UriError::NotUtf8("n%C3".into()));
        assert_eq!(err("vop://h/n?%C3%28"), UriError::NotUtf8("%C3%28".into()));
        assert_eq!(err("vop://h/n?k=%80"), UriError::NotUtf8("%80".into()));
    }

    #[test]
    fn illegal_raw_characters_and_fragments() {
        assert_eq!(
            err("vop://h/ a /"),
            UriError::IllegalChar { ch: ' ', pos: 8 }
        );
        assert_eq!(
            err("vop://h/a\tb/"),
            UriError::IllegalChar { ch: '\t', pos: 9 }
        );
        assert_eq!(err(" vop://h/"), UriError::IllegalChar { ch: ' ', pos: 0 });
        assert_eq!(
            err("vop://h/\u{7f}/"),
            UriError::IllegalChar {
                ch: '\u{7f}',
                pos: 8
            }
        );
        assert_eq!(err("vop://h/a#frag"), UriError::Fragment("#frag".into()));
        assert_eq!(err("vop://h/n?x#"), UriError::Fragment("#".into()));
    }

    // ---- queries ----

    #[test]
    fn positional_arguments() {
        let v = vri("vop://h/text/echo/echo?hello&world");
        assert_eq!(v.path, strs(&["text", "echo"]));
        let q = v.query.expect("has a query");
        assert_eq!(q.name, "echo");
        assert_eq!(q.args, vec![s("hello"), s("world")]);
        assert!(q.kwargs.is_empty());
    }

    #[test]
    fn typed_values() {
        let q = vri(
            "vop://h/f?int:5&int:-12&int:+7&bool:True&bool:False&str:int:5&str:&x:y&http://a/b?c",
        )
        .query
        .expect("has a query");
        assert_eq!(
            q.args,
            vec![
                int(5),
                int(-12),
                int(7),
                QueryValue::Bool(true),
                QueryValue::Bool(false),
                s("int:5"),
                s(""),
                s("x:y"),
                s("http://a/b?c"),
            ]
        );
        // Case matters for prefixes, as in VPy: this is a plain string.
        assert_eq!(
            vri("vop://h/f?INT:5").query.expect("has a query").args,
            vec![s("INT:5")]
        );
    }

    #[test]
    fn big_integers() {
        let digits = "123456789012345678901234567890123456789";
        let q = vri(&format!("vop://h/f?int:-{digits}&k=int:{digits}"))
            .query
            .expect("has a query");
        let big: BigInt = digits.parse().expect("digits");
        assert_eq!(q.args, vec![QueryValue::Int(-big.clone())]);
        assert_eq!(q.kwargs, vec![("k".into(), QueryValue::Int(big))]);
    }

    #[test]
    fn prefix_is_applied_after_decoding() {
        // VPy decodes before typing, so an encoded prefix still types.
        let q = vri("vop://h/f?int%3A5&%69nt:6").query.expect("has a query");
        assert_eq!(q.args, vec![int(5), int(6)]);
    }

    #[test]
    fn keyword_arguments() {
        let q = vri("vop://h/f?a&k=v&n=int:3&b&flag=bool:True&e=&s=str:bool:x")
            .query
            .expect("has a query");
        assert_eq!(q.args, vec![s("a"), s("b")]);
        assert_eq!(
            q.kwargs,
            vec![
                ("k".into(), s("v")),
                ("n".into(), int(3)),
                ("flag".into(), QueryValue::Bool(true)),
                ("e".into(), s("")),
                ("s".into(), s("bool:x")),
            ]
        );
    }

    #[test]
    fn percent_encoded_query_values() {
        let q = vri("vop://h/f?a%26b&c%3Dd&%3F&k%3D=v%26w%3D&%C3%A6=%E2%82%AC&sl=a/b?c")
            .query
            .expect("has a query");
        assert_eq!(q.args, vec![s("a&b"), s("c=d"), s("?")]);
        assert_eq!(
            q.kwargs,
            vec![
                ("k=".into(), s("v&w=")),
                ("\u{e6}".into(), s("\u{20ac}")),
                ("sl".into(), s("a/b?c")),
            ]
        );
    }

    #[test]
    fn canonical_query_form() {
        let v = Vri {
            host: name("h"),
            port: DEFAULT_PORT,
            path: strs(&["p"]),
            query: Some(Query {
                name: "f".into(),
                args: vec![
                    s(""),
                    s("a:b"),
                    s("a&b=c"),
                    int(-3),
                    QueryValue::Bool(false),
                ],
                kwargs: vec![("k".into(), s("")), ("k 2".into(), QueryValue::Bool(true))],
            }),
        };
        let text = v.to_string();
        assert_eq!(
            text,
            "vop://h/p/f?str:&str:a%3Ab&a%26b%3Dc&int:-3&bool:False&k=&k%202=bool:True"
        );
        assert_eq!(vri(&text), v);
    }

    #[test]
    fn bad_typed_values() {
        for (input, value) in [
            ("vop://h/f?int:abc", "int:abc"),
            ("vop://h/f?int:", "int:"),
            ("vop://h/f?int:-", "int:-"),
            ("vop://h/f?int:%205", "int: 5"),
            ("vop://h/f?int:1_000", "int:1_000"),
            ("vop://h/f?int:1.5", "int:1.5"),
            ("vop://h/f?k=int:0x10", "int:0x10"),
            ("vop://h/f?bool:true", "bool:true"),
            ("vop://h/f?bool:1", "bool:1"),
            ("vop://h/f?bool:", "bool:"),
            ("vop://h/f?k=bool:FALSE", "bool:FALSE"),
        ] {
            match err(input) {
                UriError::InvalidValue { value: v, .. } => assert_eq!(v, value, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_arguments() {
        let arg = |input: &str| match err(input) {
            UriError::InvalidArgument { arg, reason } => (arg, reason),
            other => panic!("{input}: {other:?}"),
        };
        assert_eq!(arg("vop://h/f?a&&b").0, "a&&b");
        assert_eq!(arg("vop://h/f?&").0, "&");
        assert_eq!(arg("vop://h/f?a&").0, "a&");
        assert_eq!(arg("vop://h/f?=v"), ("=v".into(), "empty keyword"));
        assert_eq!(arg("vop://h/f?k=a=b").0, "k=a=b");
        // An encoded '=' is an ordinary character, even as the keyword.
        let q = vri("vop://h/f?%3D=v").query.expect("has a query");
        assert_eq!(q.kwargs, vec![("=".into(), s("v"))]);
    }

    #[test]
    fn duplicate_keywords() {
        assert_eq!(
            err("vop://h/f?k=1&x&k=2"),
            UriError::DuplicateKeyword("k".into())
        );
        // Duplicates are found after decoding.
        assert_eq!(
            err("vop://h/f?k=1&%6B=1"),
            UriError::DuplicateKeyword("k".into())
        );
    }

    #[test]
    fn query_without_name() {
        assert_eq!(err("vop://h/a/?x"), UriError::MissingQueryName("?x".into()));
        assert_eq!(err("vop://h?x"), UriError::MissingQueryName("?x".into()));
        assert_eq!(err("vop://h/?"), UriError::MissingQueryName("?".into()));
    }

    #[test]
    fn question_mark_ends_the_path() {
        // Everything after the first raw '?' is the query, as in RFC 3986.
        let v = vri("vop://h/a?b/c/");
        assert!(v.path.is_empty());
        let q = v.query.expect("has a query");
        assert_eq!(q.name, "a");
        assert_eq!(q.args, vec![s("b/c/")]);
    }

    // ---- relative form and entities ----

    #[test]
    fn relative_forms() {
        assert_eq!(parse_relative(""), Ok((vec![], None)));
        assert_eq!(parse_relative("/"), Ok((vec![], None)));
        assert_eq!(parse_relative("/a/b/"), Ok((strs(&["a", "b"]), None)));
        assert_eq!(parse_relative("a/b/"), Ok((strs(&["a", "b"]), None)));
        let (path, query) = parse_relative("a/b/name?x&k=int:1").expect("parses");
        assert_eq!(path, strs(&["a", "b"]));
        let query = query.expect("has a query");
        assert_eq!(query.name, "name");
        assert_eq!(query.args, vec![s("x")]);
        assert_eq!(query.kwargs, vec![("k".into(), int(1))]);
        assert_eq!(format_relative(&path, Some(&query)), "/a/b/name?x&k=int:1");
        assert_eq!(format_relative(&[], None), "/");
        assert_eq!(
            parse_relative("name"),
            Ok((vec![], Some(Query::new("name"))))
        );
    }

    #[test]
    fn relative_errors() {
        assert_eq!(
            parse_relative("//a/"),
            Err(UriError::EmptySegment("//a/".into()))
        );
        assert_eq!(
            parse_relative("/a//"),
            Err(UriError::EmptySegment("/a//".into()))
        );
        assert_eq!(
            parse_relative("?x"),
            Err(UriError::MissingQueryName("?x".into()))
        );
        assert_eq!(parse_relative("/a#b"), Err(UriError::Fragment("#b".into())));
        assert_eq!(
            parse_relative("/a b/"),
            Err(UriError::IllegalChar { ch: ' ', pos: 2 })
        );
        assert_eq!(
            parse_relative("/%zz/"),
            Err(UriError::InvalidPercentEncoding("%zz".into()))
        );
    }

    #[test]
    fn values_to_entities() {
        let e: Entity<WireRef> = s("x").to_entity();
        assert_eq!(e, Entity::Str("x".into()));
        let e: Entity<WireRef> = int(-5).to_entity();
        assert!(matches!(e, Entity::Int(-5)));
        let big: BigInt = BigInt::from(i64::MAX) + 1;
        let e: Entity<WireRef> = QueryValue::Int(big.clone()).to_entity();
        assert!(matches!(e, Entity::BigInt(ref b) if *b == big));
        let e: Entity<WireRef> = QueryValue::Bool(true).to_entity();
        assert_eq!(e, Entity::Bool(true));
    }

    #[test]
    fn conversions_into_values() {
        assert_eq!(QueryValue::from("a"), s("a"));
        assert_eq!(QueryValue::from(String::from("a")), s("a"));
        assert_eq!(QueryValue::from(3i64), int(3));
        assert_eq!(QueryValue::from(BigInt::from(3)), int(3));
        assert_eq!(QueryValue::from(false), QueryValue::Bool(false));
    }

    #[test]
    fn error_messages_name_the_part() {
        assert_eq!(
            err("vop://h/f?int:abc").to_string(),
            "invalid typed value \"int:abc\": expected a decimal integer after \"int:\""
        );
        assert_eq!(
            err("http://h/").to_string(),
            "unsupported scheme \"http\" (only \"vop\" is supported)"
        );
        assert_eq!(
            err("vop://h/a//").to_string(),
            "empty path segment in \"/a//\""
        );
        assert_eq!(
            err("vop://h:x/").to_string(),
            "invalid port \"x\" (expected a number from 1 to 65535)"
        );
        assert_eq!(
            err("vop://h/f?k=1&k=2").to_string(),
            "duplicate keyword argument \"k\""
        );
    }

    // ---- round trips ----

    fn host_strategy() -> impl Strategy<Value = Host> {
        prop_oneof![
            "[a-z0-9_-]{1,8}(\\.[a-z0-9_-]{1,8}){0,2}\\.[a-z][a-z0-9-]{0,5}".prop_map(Host::Name),
            "[a-z][a-z0-9-]{0,10}".prop_map(Host::Name),
            any::<[u8; 4]>().prop_map(|b| Host::Ipv4(b.into())),
            any::<[u16; 8]>().prop_map(|s| Host::Ipv6(s.into())),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z:=&?/%#+ ]{0,8}",
            "(str|int|bool):[a-zA-Z0-9]{0,4}",
        ]
    }

    fn value_strategy() -> impl Strategy<Value = QueryValue> {
        prop_oneof![
            text().prop_map(QueryValue::Str),
            any::<i128>().prop_map(|i| QueryValue::Int(i.into())),
            any::<bool>().prop_map(QueryValue::Bool),
        ]
    }

    fn non_empty() -> impl Strategy<Value = String> {
        text().prop_filter("non-empty", |s| !s.is_empty())
    }

    fn query_strategy() -> impl Strategy<Value = Query> {
        (
            non_empty(),
            prop::collection::vec(value_strategy(), 0..4),
            prop::collection::vec((non_empty(), value_strategy()), 0..4),
        )
            .prop_map(|(name, args, kwargs)| {
                let mut unique: Vec<(String, QueryValue)> = Vec::new();
                for (k, v) in kwargs {
                    if !unique.iter().any(|(u, _)| *u == k) {
                        unique.push((k, v));
                    }
                }
                Query {
                    name,
                    args,
                    kwargs: unique,
                }
            })
    }

    fn vri_strategy() -> impl Strategy<Value = Vri> {
        (
            host_strategy(),
            1u16..,
            prop::collection::vec(non_empty(), 0..4),
            prop::option::of(query_strategy()),
        )
            .prop_map(|(host, port, path, query)| Vri {
                host,
                port,
                path,
                query,
            })
    }

    proptest! {
        #[test]
        fn display_parses_back(v in vri_strategy()) {
            let text = v.to_string();
            prop_assert!(text.is_ascii());
            let back: Vri = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn relative_parses_back(path in prop::collection::vec(non_empty(), 0..4),
                                query in prop::option::of(query_strategy())) {
            let text = format_relative(&path, query.as_ref());
            let (p, q) = parse_relative(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(p, path);
            prop_assert_eq!(q, query);
        }

        #[test]
        fn arbitrary_input_never_panics_and_reparses(input in "(vop://)?[a-z0-9.:\\[\\]/?&=%#@ A-F]{0,30}") {
            if let Ok(v) = input.parse::<Vri>() {
                let text = v.to_string();
                prop_assert_eq!(text.parse::<Vri>(), Ok(v));
            }
            let _ = parse_relative(&input);
        }
    }
}
