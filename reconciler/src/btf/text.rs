//! Textual forms shared by the encoder and the decoder: hex bytes, IPv4/IPv6
//! addresses and CIDRs, MAC addresses, and YAML flow scalars.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::yaml::{Kind, Node, Resolved, Scalar, ScalarStyle};

/// The digits after a `0x`/`0X` prefix, if the text has one.
pub(super) fn hex_digits(text: &str) -> Option<&str> {
    text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))
}

/// Fills `out` from exactly `2 * out.len()` hex digits (either case).
pub(super) fn parse_hex(digits: &str, out: &mut [u8]) -> bool {
    let digits = digits.as_bytes();
    if digits.len() != out.len() * 2 {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return false,
        }
    }
    true
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `0x` and two lowercase hex digits per byte.
pub(super) fn write_hex(bytes: &[u8], out: &mut String) {
    out.reserve(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (one separator throughout, two hex digits per byte).
pub(super) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes = text.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let sep = bytes[2];
    if sep != b':' && sep != b'-' {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        let at = i * 3;
        if i > 0 && bytes[at - 1] != sep {
            return None;
        }
        *byte = hex_value(bytes[at])? << 4 | hex_value(bytes[at + 1])?;
    }
    Some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(super) fn write_mac(mac: &[u8], out: &mut String) {
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
}

/// Address families the textual forms know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4: 4 bytes.
    V4,
    /// IPv6: 16 bytes.
    V6,
}

impl Family {
    /// Address length in bytes.
    pub(super) fn len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// Parses an address of the family into `out` (network byte order).
pub(super) fn parse_addr(family: Family, text: &str, out: &mut [u8]) -> bool {
    match family {
        Family::V4 => parse_ipv4(text.as_bytes()).is_some_and(|octets| {
            out.copy_from_slice(&octets);
            true
        }),
        Family::V6 => text.parse::<Ipv6Addr>().is_ok_and(|a| {
            out.copy_from_slice(&a.octets());
            true
        }),
    }
}

/// Dotted-quad IPv4, exactly as strict as `Ipv4Addr::from_str` (four decimal
/// octets up to 255, no leading zeros), but a single pass without the generic
/// parser: LPM keys are parsed a million at a time.
pub(super) fn parse_ipv4(text: &[u8]) -> Option<[u8; 4]> {
    parse_ipv4_prefix(text).and_then(|(octets, used)| (used == text.len()).then_some(octets))
}

/// An IPv4 address at the start of `text`, and how many bytes it takes.
fn parse_ipv4_prefix(text: &[u8]) -> Option<([u8; 4], usize)> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if text.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while let Some(&d) = text.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start == 3 {
                return None;
            }
            value = value * 10 + u32::from(d - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && text[start] == b'0') || value > 255 {
            return None;
        }
        *octet = value as u8;
    }
    Some((octets, i))
}

/// 1-3 decimal digits without a leading zero (except "0" itself), at most `max`.
fn parse_decimal(digits: &[u8], max: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut value = 0u32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    (value <= max).then_some(value)
}

/// Writes an address of the family from network-order bytes.
pub(super) fn write_addr(family: Family, bytes: &[u8], out: &mut String) {
    match family {
        Family::V4 => {
            let octets: [u8; 4] = bytes.try_into().unwrap_or_default();
            let _ = write!(out, "{}", Ipv4Addr::from(octets));
        }
        Family::V6 => {
            let octets: [u8; 16] = bytes.try_into().unwrap_or_default();
            let _ = write!(out, "{}", Ipv6Addr::from(octets));
        }
    }
}

/// Why CIDR text was rejected.
pub(super) enum CidrError {
    /// Not an address (with an optional `/N`) of the family.
    Syntax,
    /// `/N` longer than the address.
    TooLong(u32),
    /// Bits set after the prefix; carries the prefix length.
    HostBits(u32),
}

/// Parses `addr/N` or a bare `addr` (a full-length prefix) into `addr_out`;
/// returns the prefix length. Host bits must be zero.
pub(super) fn parse_cidr(
    family: Family,
    text: &str,
    addr_out: &mut [u8],
) -> Result<u32, CidrError> {
    let max = (family.len() * 8) as u32;
    let bytes = text.as_bytes();
    let (addr_ok, prefix) = match family {
        // The hot path (a million keys per config): one pass over the bytes.
        Family::V4 => {
            let (octets, used) = parse_ipv4_prefix(bytes).ok_or(CidrError::Syntax)?;
            addr_out.copy_from_slice(&octets);
            let prefix = match bytes.get(used) {
                None => max,
                Some(b'/') => parse_decimal(&bytes[used + 1..], 999).ok_or(CidrError::Syntax)?,
                Some(_) => return Err(CidrError::Syntax),
            };
            (true, prefix)
        }
        Family::V6 => match bytes.iter().rposition(|&b| b == b'/') {
            Some(slash) => {
                // Digits only: u32::from_str would take a leading '+'.
                let prefix = parse_decimal(&bytes[slash + 1..], 999).ok_or(CidrError::Syntax)?;
                (parse_addr(family, &text[..slash], addr_out), prefix)
            }
            None => (parse_addr(family, text, addr_out), max),
        },
    };
    if !addr_ok {
        return Err(CidrError::Syntax);
    }
    if prefix > max {
        return Err(CidrError::TooLong(prefix));
    }
    if host_bits_set(addr_out, prefix) {
        return Err(CidrError::HostBits(prefix));
    }
    Ok(prefix)
}

/// Whether any bit after the first `prefix` bits is set.
pub(super) fn host_bits_set(addr: &[u8], prefix: u32) -> bool {
    match <[u8; 4]>::try_from(addr) {
        Ok(v4) => {
            let host_mask = u32::MAX.checked_shr(prefix).unwrap_or(0);
            u32::from_be_bytes(v4) & host_mask != 0
        }
        Err(_) => addr.iter().enumerate().any(|(i, &b)| {
            let first_bit = (i * 8) as u32;
            let keep = prefix.saturating_sub(first_bit).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            b & !mask != 0
        }),
    }
}

/// Clears the bits after the first `prefix` bits.
pub(super) fn mask_host_bits(addr: &mut [u8], prefix: u32) {
    for (i, b) in addr.iter_mut().enumerate() {
        let first_bit = (i * 8) as u32;
        let keep = prefix.saturating_sub(first_bit).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
}

/// A short description of a node for "found ..." in messages: its kind, and
/// for strings the text itself (shortened).
pub(super) fn describe(node: &Node<'_>) -> String {
    match &node.kind {
        Kind::Scalar(s) => match s.resolve() {
            Resolved::Str(text) => {
                let mut out = String::from("a string ");
                let short: String = text.chars().take(40).collect();
                write_quoted(&short, &mut out);
                if short.len() < text.len() {
                    out.push_str("...");
                }
                out
            }
            _ => node.describe().to_owned(),
        },
        _ => node.describe().to_owned(),
    }
}

/// Writes `text` as a YAML flow scalar: plain when that reads back as the same
/// string, double-quoted otherwise. Text with `:` is always quoted (IPv6, MAC):
/// plain `::1` is not portable YAML in flow collections.
pub(super) fn write_scalar(text: &str, out: &mut String) {
    if is_plain_safe(text) {
        out.push_str(text);
    } else {
        write_quoted(text, out);
    }
}

fn is_plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() {
        return false;
    }
    if text.ends_with(char::is_whitespace)
        || text
            .chars()
            .any(|c| ":,[]{}#".contains(c) || c.is_control() || c == '\u{feff}')
    {
        return false;
    }
    let scalar = Scalar {
        text: text.into(),
        style: ScalarStyle::Plain,
    };
    matches!(scalar.resolve(), Resolved::Str(_))
}

/// A YAML double-quoted scalar.
pub(super) fn write_quoted(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || c == '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex() {
        let mut out = [0u8; 3];
        assert!(parse_hex("0aFf10", &mut out));
        assert_eq!(out, [0x0a, 0xff, 0x10]);
        assert!(!parse_hex("0aFf1", &mut out));
        assert!(!parse_hex("0aFg10", &mut out));
        let mut text = String::new();
        write_hex(&out, &mut text);
        assert_eq!(text, "0x0aff10");
        assert_eq!(hex_digits("0X12"), Some("12"));
        assert_eq!(hex_digits("12"), None);
    }

    #[test]
    fn ipv4_matches_std() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.1",
            "01.0.0.0",
            "256.0.0.0",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.",
            "+1.2.3.4",
            "1.2.3.4 ",
            "",
            "1000.0.0.0",
            "a.b.c.d",
        ] {
            assert_eq!(
                parse_ipv4(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok().map(|a| a.octets()),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn ipv4_matches_std_on_random_text(text in "[0-9.]{0,16}") {
            proptest::prop_assert_eq!(
                parse_ipv4(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok().map(|a| a.octets())
            );
        }
    }

    #[test]
    fn mac() {
        assert_eq!(
            parse_mac("aa:bb:cc:dd:ee:0F"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f])
        );
        assert_eq!(parse_mac("aa-bb-cc-dd-ee-ff").map(|m| m[5]), Some(0xff));
        assert_eq!(parse_mac("aa:bb-cc:dd:ee:ff"), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee"), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:fg"), None);
    }

    #[test]
    fn cidr() {
        let mut addr = [0u8; 4];
        assert!(matches!(
            parse_cidr(Family::V4, "10.1.0.0/16", &mut addr),
            Ok(16)
        ));
        assert_eq!(addr, [10, 1, 0, 0]);
        assert!(matches!(
            parse_cidr(Family::V4, "10.1.2.3", &mut addr),
            Ok(32)
        ));
        assert!(matches!(
            parse_cidr(Family::V4, "10.1.2.3/16", &mut addr),
            Err(CidrError::HostBits(16))
        ));
        assert!(matches!(
            parse_cidr(Family::V4, "10.0.0.0/33", &mut addr),
            Err(CidrError::TooLong(33))
        ));
        for bad in [
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0/8",
            "::/0",
            "10.0.0.0/0008",
            "10.0.0.0/08",
            "10.0.0.0/8/8",
        ] {
            assert!(
                matches!(
                    parse_cidr(Family::V4, bad, &mut addr),
                    Err(CidrError::Syntax)
                ),
                "{bad}"
            );
        }
        let mut addr6 = [0u8; 16];
        assert!(matches!(
            parse_cidr(Family::V6, "2001:db8::/32", &mut addr6),
            Ok(32)
        ));
        assert!(matches!(parse_cidr(Family::V6, "::/0", &mut addr6), Ok(0)));
        let mut net = [192, 0, 2, 255];
        mask_host_bits(&mut net, 25);
        assert_eq!(net, [192, 0, 2, 128]);
        assert!(!host_bits_set(&net, 25));
        assert!(host_bits_set(&net, 24));
        assert!(!host_bits_set(&[0; 4], 0));
        assert!(host_bits_set(&[0, 0, 0, 1], 0));
        assert!(!host_bits_set(&[0, 0, 0, 1], 32));
        assert!(host_bits_set(&[0, 0, 0, 1], 31));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert!(host_bits_set(&v6, 127));
        assert!(!host_bits_set(&v6, 128));
    }

    #[test]
    fn scalars() {
        let text = |s: &str| {
            let mut out = String::new();
            write_scalar(s, &mut out);
            out
        };
        assert_eq!(text("192.0.2.0/24"), "192.0.2.0/24");
        assert_eq!(text("KF_MODE_FAST"), "KF_MODE_FAST");
        assert_eq!(text("2001:db8::1"), "\"2001:db8::1\"");
        assert_eq!(text("null"), "\"null\"");
        assert_eq!(text("10"), "\"10\"");
        assert_eq!(text(""), "\"\"");
        assert_eq!(text("a b"), "a b");
        assert_eq!(text("a, b"), "\"a, b\"");
        assert_eq!(text("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(text("-x"), "\"-x\"");
    }
}
