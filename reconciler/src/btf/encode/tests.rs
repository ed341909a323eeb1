//! Encoder tests: one per rule and per error, with exact messages.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::btf::object::{ObjectInfo, inspect};
use crate::btf::test_support::{bundled, fixture_object, yaml};

fn fixture() -> &'static ObjectInfo {
    static INFO: OnceLock<ObjectInfo> = OnceLock::new();
    INFO.get_or_init(|| inspect(&fixture_object()).expect("fixture inspects"))
}

fn bundled_info(name: &str) -> ObjectInfo {
    inspect(bundled(name)).expect("bundled object inspects")
}

fn key_encoder(info: &ObjectInfo, map: &str) -> Encoder {
    Encoder::map_key(&info.btf, info.map(map).expect("map exists")).expect("key encoder")
}

fn value_encoder(info: &ObjectInfo, map: &str) -> Encoder {
    Encoder::map_value(&info.btf, info.map(map).expect("map exists")).expect("value encoder")
}

/// The fixture's `struct fx_value`.
fn fx_value() -> Encoder {
    value_encoder(fixture(), "fx_values")
}

fn ok(encoder: &Encoder, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encoder
        .encode(&yaml(text), &mut out)
        .unwrap_or_else(|e| panic!("encoding {text}: {e}"));
    assert_eq!(out.len(), encoder.size());
    out
}

fn err(encoder: &Encoder, text: &str) -> EncodeError {
    let mut out = vec![0xAA];
    let e = encoder
        .encode(&yaml(text), &mut out)
        .expect_err("encoding fails");
    assert_eq!(out, [0xAA], "a failed encode leaves the output alone");
    e
}

fn msg(encoder: &Encoder, text: &str) -> String {
    err(encoder, text).to_string()
}

/// Bytes `[start, start + len)` of `struct fx_value` encoded from `text`.
fn fx(text: &str, start: usize, len: usize) -> Vec<u8> {
    ok(&fx_value(), text)[start..start + len].to_vec()
}

#[test]
fn lpm_v4_keys() {
    let info = bundled_info("blocklist");
    let key = key_encoder(&info, "deny_v4");
    assert_eq!(key.size(), 8);
    assert_eq!(ok(&key, "10.1.2.3/32"), [32, 0, 0, 0, 10, 1, 2, 3]);
    assert_eq!(ok(&key, "192.0.2.0/24"), [24, 0, 0, 0, 192, 0, 2, 0]);
    assert_eq!(ok(&key, "192.0.2.1"), [32, 0, 0, 0, 192, 0, 2, 1]);
    assert_eq!(ok(&key, "0.0.0.0/0"), [0; 8]);
    assert_eq!(ok(&key, "'10.0.0.0/8'"), [8, 0, 0, 0, 10, 0, 0, 0]);
    assert_eq!(
        ok(&key, "{prefixlen: 24, addr: 192.0.2.0}"),
        [24, 0, 0, 0, 192, 0, 2, 0]
    );
    assert_eq!(ok(&key, "0x18000000c0000200"), [24, 0, 0, 0, 192, 0, 2, 0]);
    assert_eq!(ok(&key, "0x2000000001020304"), [32, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(ok(&key, "{prefixlen: 0, addr: 0.0.0.0}"), [0; 8]);
    // Hex and the mapping form get the CIDR text's checks, with its messages:
    // the kernel refuses a prefix past 32 bits, and host bits make a second
    // key for the kernel's one entry (plan would never be in sync).
    assert_eq!(
        msg(&key, "0x18000000c0000201"),
        "key: host bits set in 0x18000000c0000201 (did you mean 192.0.2.0/24?)"
    );
    assert_eq!(
        msg(&key, "0xff000000c0000200"),
        "key: prefix length 255 is longer than the 32 bits of the address in 0xff000000c0000200"
    );
    assert_eq!(
        msg(&key, "0x21000000c0000200"),
        "key: prefix length 33 is longer than the 32 bits of the address in 0x21000000c0000200"
    );
    assert_eq!(
        msg(&key, "{prefixlen: 24, addr: 192.0.2.1}"),
        "key: host bits set in 192.0.2.1/24 (did you mean 192.0.2.0/24?)"
    );
    assert_eq!(
        msg(&key, "{prefixlen: 255, addr: 192.0.2.0}"),
        "key: prefix length 255 is longer than the 32 bits of the address in 192.0.2.0/255"
    );
    assert_eq!(
        msg(&key, "{addr: 192.0.2.1}"),
        "key: host bits set in 192.0.2.1/0 (did you mean 0.0.0.0/0?)"
    );
    assert_eq!(
        msg(&key, "192.0.2.1/24"),
        "key: host bits set in 192.0.2.1/24 (did you mean 192.0.2.0/24?)"
    );
    assert_eq!(
        msg(&key, "10.0.0.0/33"),
        "key: prefix length 33 is longer than the 32 bits of the address in 10.0.0.0/33"
    );
    assert_eq!(
        msg(&key, "2001:db8::/32"),
        "key: expected an IPv4 address or CIDR (like 192.0.2.0/24) for struct lpm_v4_key, \
         found a string \"2001:db8::/32\""
    );
    assert_eq!(
        msg(&key, "10.0.0.0/x"),
        "key: expected an IPv4 address or CIDR (like 192.0.2.0/24) for struct lpm_v4_key, \
         found a string \"10.0.0.0/x\""
    );
    assert_eq!(
        msg(&key, "[10, 0]"),
        "key: expected an IPv4 address or CIDR (like 192.0.2.0/24) for struct lpm_v4_key, \
         found a list"
    );
    assert_eq!(
        msg(&key, "{prefixlen: 24, addr: 300.0.0.0}"),
        "key.addr: expected an integer or an IPv4 address for __be32, \
         found a string \"300.0.0.0\""
    );
    assert_eq!(
        msg(&key, "0x1800"),
        "key: expected 0x followed by 16 hex digits for struct lpm_v4_key (8 bytes), \
         found an integer"
    );
}

#[test]
fn lpm_v6_keys() {
    let info = bundled_info("blocklist");
    let key = key_encoder(&info, "allow_v6");
    assert_eq!(key.size(), 20);
    let mut expected = vec![32, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8];
    expected.extend([0; 12]);
    assert_eq!(ok(&key, "2001:db8::/32"), expected);
    let mut expected = vec![128, 0, 0, 0];
    expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
    assert_eq!(ok(&key, "\"::ffff:192.0.2.1\""), expected);
    assert_eq!(
        msg(&key, "2001:db8::1/32"),
        "key: host bits set in 2001:db8::1/32 (did you mean 2001:db8::/32?)"
    );
    assert_eq!(
        msg(&key, "\"::/129\""),
        "key: prefix length 129 is longer than the 128 bits of the address in ::/129"
    );
    assert_eq!(
        msg(&key, "10.0.0.0/8"),
        "key: expected an IPv6 address or CIDR (like 2001:db8::/32) for struct lpm_v6_key, \
         found a string \"10.0.0.0/8\""
    );
    // The mapping form reaches struct in6_addr, which takes IPv6 text.
    assert_eq!(
        ok(&key, "{prefixlen: 128, addr: \"::ffff:192.0.2.1\"}"),
        ok(&key, "\"::ffff:192.0.2.1/128\"")
    );
    let hex = |prefix: u8, addr: &str| format!("0x{prefix:02x}000000{addr}");
    assert_eq!(
        ok(&key, &hex(32, "20010db8000000000000000000000000")),
        ok(&key, "2001:db8::/32")
    );
    assert_eq!(
        msg(&key, &hex(32, "20010db8000000000000000000000001")),
        "key: host bits set in 0x2000000020010db8000000000000000000000001 \
         (did you mean 2001:db8::/32?)"
    );
    assert_eq!(
        msg(&key, &hex(129, "00000000000000000000000000000000")),
        "key: prefix length 129 is longer than the 128 bits of the address in \
         0x8100000000000000000000000000000000000000"
    );
    assert_eq!(
        msg(&key, "{prefixlen: 32, addr: \"2001:db8:8000::\"}"),
        "key: host bits set in 2001:db8:8000::/32 (did you mean 2001:db8::/32?)"
    );
}

#[test]
fn lpm_keys_of_other_address_types() {
    let info = fixture();
    let in_addr = key_encoder(info, "fx_lpm_in_addr");
    assert_eq!(ok(&in_addr, "10.0.0.0/8"), [8, 0, 0, 0, 10, 0, 0, 0]);
    let bytes = key_encoder(info, "fx_lpm_bytes");
    let mut expected = vec![16, 0, 0, 0, 0xfd, 0x00];
    expected.extend([0; 14]);
    assert_eq!(ok(&bytes, "fd00::/16"), expected);
    // A key shaped like an LPM key, outside an LPM trie, is just a struct.
    let btf = &bundled_info("blocklist").btf;
    let plain = Encoder::new(btf, btf.find("lpm_v4_key").expect("type"), "key").expect("encoder");
    assert_eq!(
        msg(&plain, "10.0.0.0/8"),
        "key: expected a mapping of field names for struct lpm_v4_key, \
         found a string \"10.0.0.0/8\""
    );
}

#[test]
fn integers() {
    let info = bundled_info("blocklist");
    let value = value_encoder(&info, "deny_v4");
    assert_eq!(ok(&value, "1"), [1]);
    assert_eq!(ok(&value, "0xff"), [255]);
    assert_eq!(ok(&value, "0o17"), [15]);
    assert_eq!(
        msg(&value, "256"),
        "value: 256 is out of range for __u8 (0 to 255)"
    );
    assert_eq!(
        msg(&value, "-1"),
        "value: -1 is out of range for __u8 (0 to 255)"
    );
    assert_eq!(
        msg(&value, "\"10\""),
        "value: expected an integer for __u8, found a string \"10\""
    );
    assert_eq!(
        msg(&value, "\"0x10\""),
        "value: expected an integer for __u8, found a string \"0x10\""
    );
    assert_eq!(
        msg(&value, "1.5"),
        "value: expected an integer for __u8, found a float"
    );
    assert_eq!(
        msg(&value, "true"),
        "value: expected an integer for __u8, found a boolean"
    );
    assert_eq!(
        msg(&value, "~"),
        "value: expected an integer for __u8, found null"
    );
    assert_eq!(
        msg(&value, "[1]"),
        "value: expected an integer for __u8, found a list"
    );

    assert_eq!(fx("{count: 4294967295}", 4, 4), [0xff; 4]);
    assert_eq!(fx("{count: 0x01020304}", 4, 4), [4, 3, 2, 1]);
    assert_eq!(fx("{s8: -128}", 116, 1), [0x80]);
    assert_eq!(fx("{s16: -2}", 118, 2), [0xfe, 0xff]);
    assert_eq!(
        fx("{s64: -9223372036854775808}", 120, 8),
        i64::MIN.to_le_bytes()
    );
    assert_eq!(fx("{total: 18446744073709551615}", 16, 8), [0xff; 8]);
    let e = fx_value();
    assert_eq!(
        msg(&e, "{s8: -129}"),
        "value.s8: -129 is out of range for __s8 (-128 to 127)"
    );
    assert_eq!(
        msg(&e, "{total: -1}"),
        "value.total: -1 is out of range for __u64 (0 to 18446744073709551615)"
    );
    assert_eq!(
        msg(&e, "{s64: 9223372036854775808}"),
        "value.s64: 9223372036854775808 is out of range for __s64 \
         (-9223372036854775808 to 9223372036854775807)"
    );
}

#[test]
fn booleans_and_chars() {
    assert_eq!(fx("{on: true}", 128, 1), [1]);
    assert_eq!(fx("{on: False}", 128, 1), [0]);
    assert_eq!(fx("{on: 1}", 128, 1), [1]);
    let e = fx_value();
    assert_eq!(
        msg(&e, "{on: 2}"),
        "value.on: 2 is out of range for _Bool (0 to 1)"
    );
    assert_eq!(
        msg(&e, "{on: yes}"),
        "value.on: expected true, false, 0 or 1 for _Bool, found a string \"yes\""
    );
    // A char is a byte: both signed and unsigned spellings fit.
    assert_eq!(
        fx(
            "{label: [-1, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}",
            48,
            2
        ),
        [0xff, 0xff]
    );
    assert_eq!(
        msg(
            &e,
            "{label: [256, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}"
        ),
        "value.label[0]: 256 is out of range for char (-128 to 255)"
    );
}

#[test]
fn big_endian_typedefs() {
    assert_eq!(fx("{port_be: 8080}", 64, 2), [0x1f, 0x90]);
    assert_eq!(
        fx("{inner: {port: 8080, nport: 8080}}", 24, 4),
        [0x90, 0x1f, 0x1f, 0x90]
    );
    assert_eq!(fx("{be64: 1}", 136, 8), [0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(fx("{ip4be: 192.0.2.1}", 92, 4), [192, 0, 2, 1]);
    assert_eq!(fx("{ip4be: 0xc0000201}", 92, 4), [192, 0, 2, 1]);
    assert_eq!(
        msg(&fx_value(), "{ip4be: 300.1.1.1}"),
        "value.ip4be: expected an integer or an IPv4 address for __be32, \
         found a string \"300.1.1.1\""
    );
    assert_eq!(
        msg(&fx_value(), "{port_be: 65536}"),
        "value.port_be: 65536 is out of range for __be16 (0 to 65535)"
    );
}

#[test]
fn bitfields() {
    let bytes = ok(
        &fx_value(),
        "{flags: 5, level: 31, delta: -64, wide: 131071}",
    );
    let word = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
    assert_eq!(word & 0b111, 5);
    assert_eq!((word >> 3) & 0b11111, 31);
    assert_eq!((word >> 8) & 0x7f, 0x40, "-64 in 7 bits");
    assert_eq!(word >> 15, 0x1ffff);
    // Neighbours stay untouched.
    assert_eq!(ok(&fx_value(), "{level: 1}")[32..36], [8, 0, 0, 0]);
    let e = fx_value();
    assert_eq!(
        msg(&e, "{flags: 8}"),
        "value.flags: 8 is out of range for __u32:3 (0 to 7)"
    );
    assert_eq!(
        msg(&e, "{delta: 64}"),
        "value.delta: 64 is out of range for __s32:7 (-64 to 63)"
    );
    assert_eq!(
        msg(&e, "{wide: x}"),
        "value.wide: expected an integer for __u32:17, found a string \"x\""
    );
}

#[test]
fn enums() {
    assert_eq!(fx("{mode: FX_MODE_SLOW}", 8, 4), [2, 0, 0, 0]);
    assert_eq!(fx("{mode: \"FX_MODE_FAST\"}", 8, 4), [1, 0, 0, 0]);
    assert_eq!(fx("{mode: 7}", 8, 4), [7, 0, 0, 0]);
    assert_eq!(fx("{small: FX_SMALL_B}", 129, 1), [200]);
    assert_eq!(fx("{neg: FX_NEG_MINUS}", 132, 4), [0xff; 4]);
    assert_eq!(fx("{neg: -1}", 132, 4), [0xff; 4]);
    let e = fx_value();
    assert_eq!(
        msg(&e, "{mode: FX_MODE_TURBO}"),
        "value.mode: unknown enumerator FX_MODE_TURBO for enum fx_mode \
         (valid: FX_MODE_OFF, FX_MODE_FAST, FX_MODE_SLOW)"
    );
    assert_eq!(
        msg(&e, "{small: 256}"),
        "value.small: 256 is out of range for enum fx_small (-128 to 255)"
    );
    assert_eq!(
        msg(&e, "{mode: [1]}"),
        "value.mode: expected an enumerator of enum fx_mode or an integer, found a list \
         (valid: FX_MODE_OFF, FX_MODE_FAST, FX_MODE_SLOW)"
    );
    let info = fixture();
    let many =
        Encoder::global(&info.btf, info.global("many_mode").expect("global")).expect("encoder");
    assert_eq!(ok(&many, "FX_M11"), [11, 0, 0, 0]);
    assert_eq!(
        msg(&many, "FX_M12"),
        "many_mode: unknown enumerator FX_M12 for enum fx_many (valid: FX_M0, FX_M1, FX_M2, \
         FX_M3, FX_M4, FX_M5, FX_M6, FX_M7, FX_M8, FX_M9, and 2 more)"
    );
}

#[test]
fn structs() {
    let e = fx_value();
    assert_eq!(e.size(), 184);
    let bytes = ok(&e, "{tag: 0xff, count: 0x01020304}");
    let mut expected = vec![0u8; 184];
    expected[0] = 0xff;
    expected[4..8].copy_from_slice(&[4, 3, 2, 1]);
    assert_eq!(bytes, expected, "omitted fields and padding are zero");
    assert_eq!(ok(&e, "{}"), vec![0u8; 184]);
    let err = err(&e, "{tag: 1, nope: 2}");
    assert_eq!(
        err.mark,
        crate::config::yaml::Mark::new(1, 10),
        "the key's mark"
    );
    assert_eq!(err.path, "value");
    assert_eq!(
        err.to_string(),
        "value: unknown field nope in struct fx_value (fields: tag, count, mode, total, \
         inner, u, flags, level, delta, wide, and 24 more)"
    );
    assert_eq!(
        msg(&e, "{inner: 5}"),
        "value.inner: expected a mapping of field names for struct fx_inner, found an integer"
    );
    assert_eq!(
        msg(&e, "{inner: [1, 2]}"),
        "value.inner: expected a mapping of field names for struct fx_inner, found a list"
    );
    assert_eq!(
        msg(&e, "{inner: {[1]: 2}}"),
        "value.inner: expected a field name of struct fx_inner, found a list"
    );
    let info = bundled_info("ratelimit");
    let config = value_encoder(&info, "rl_config");
    let mut expected = 100u64.to_le_bytes().to_vec();
    expected.extend(10u64.to_le_bytes());
    assert_eq!(ok(&config, "{rate_pps: 100, burst: 10}"), expected);
    assert_eq!(
        msg(&config, "{rate: 100}"),
        "value: unknown field rate in struct rl_config (fields: rate_pps, burst)"
    );
    assert_eq!(
        msg(&config, "100"),
        "value: expected a mapping of field names for struct rl_config, found an integer"
    );
    assert_eq!(
        msg(&config, "0x64"),
        "value: expected 0x followed by 32 hex digits for struct rl_config (16 bytes), \
         found an integer"
    );
    assert_eq!(
        msg(&config, "fast"),
        "value: expected a mapping of field names for struct rl_config, found a string \"fast\""
    );
}

#[test]
fn unions_and_anonymous_members() {
    assert_eq!(fx("{u: {word: 0x01020304}}", 28, 4), [4, 3, 2, 1]);
    assert_eq!(fx("{u: {bytes: [1, 2, 3, 4]}}", 28, 4), [1, 2, 3, 4]);
    let e = fx_value();
    assert_eq!(
        msg(&e, "{u: {}}"),
        "value.u: union fx_u takes exactly one member, found 0 (members: word, bytes)"
    );
    assert_eq!(
        msg(&e, "{u: {word: 1, bytes: [1, 2, 3, 4]}}"),
        "value.u: union fx_u takes exactly one member, found 2 (members: word, bytes)"
    );
    assert_eq!(
        fx("{anon_a: 1, anon_b: 2, alt_half: 3}", 176, 8),
        [1, 0, 2, 0, 3, 0, 0, 0]
    );
    assert_eq!(fx("{alt_word: 0x01020304}", 180, 4), [4, 3, 2, 1]);
    assert_eq!(
        msg(&e, "{alt_word: 1, anon_a: 1, alt_half: 2}"),
        "value: alt_word and alt_half share storage (an anonymous union in struct fx_value): \
         set only one"
    );
}

#[test]
fn arrays() {
    assert_eq!(
        fx("{list: [1, 2, 3]}", 36, 12),
        [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]
    );
    assert_eq!(
        fx("{pair: [{port: 1}, {nport: 2}]}", 144, 8),
        [1, 0, 0, 0, 0, 0, 0, 2]
    );
    let e = fx_value();
    assert_eq!(
        msg(&e, "{list: [1, 2]}"),
        "value.list: expected 3 items for __u32[3], found 2"
    );
    let error = err(&e, "{list: [1, 2, x]}");
    assert_eq!(error.path, "value.list[2]");
    assert_eq!(error.mark.col, 15);
    assert_eq!(
        error.to_string(),
        "value.list[2]: expected an integer for __u32, found a string \"x\""
    );
    assert_eq!(
        msg(&e, "{list: 5}"),
        "value.list: expected a list of 3 items for __u32[3], found an integer"
    );
    assert_eq!(
        msg(&e, "{pair: [{port: 1}, {nope: 2}]}"),
        "value.pair[1]: unknown field nope in struct fx_inner (fields: port, nport)"
    );
    assert_eq!(
        msg(&e, "{raw4: {a: 1}}"),
        "value.raw4: expected an IPv4 address or a list of 4 items for __u8[4], found a mapping"
    );
}

#[test]
fn strings() {
    let mut expected = b"hello".to_vec();
    expected.resize(16, 0);
    assert_eq!(fx("{label: hello}", 48, 16), expected);
    assert_eq!(
        fx("{label: 'héllo wörld'}", 48, 16)[..13],
        *"héllo wörld".as_bytes()
    );
    assert_eq!(fx("{label: 12}", 48, 3), *b"12\0");
    assert_eq!(fx("{label: \"\"}", 48, 16), [0; 16]);
    assert_eq!(
        fx("{label: 0x12}", 48, 5),
        *b"0x12\0",
        "not the hex form: text"
    );
    let hex = format!("{{label: 0x{}}}", "41".repeat(16));
    assert_eq!(fx(&hex, 48, 16), [0x41; 16], "exactly the hex form: bytes");
    let e = fx_value();
    assert_eq!(
        msg(&e, "{label: abcdefghijklmnop}"),
        "value.label: a string of 16 bytes is too long for char[16] \
         (at most 15, leaving room for the NUL terminator)"
    );
    assert_eq!(
        msg(&e, "{label: ~}"),
        "value.label: expected a string or a list of 16 items for char[16], found null"
    );
    let info = fixture();
    let greeting =
        Encoder::global(&info.btf, info.global("greeting").expect("global")).expect("encoder");
    assert_eq!(ok(&greeting, "hi"), *b"hi\0\0\0\0\0\0");
}

#[test]
fn addresses() {
    assert_eq!(
        fx("{mac: \"aa:bb:cc:dd:ee:ff\"}", 66, 6),
        [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
    );
    assert_eq!(
        fx("{mac: AA-BB-CC-DD-EE-01}", 66, 6),
        [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]
    );
    assert_eq!(fx("{mac: [1, 2, 3, 4, 5, 6]}", 66, 6), [1, 2, 3, 4, 5, 6]);
    assert_eq!(fx("{mac: 0x0102030405ff}", 66, 6), [1, 2, 3, 4, 5, 0xff]);
    let mut v6 = [0u8; 16];
    v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    v6[15] = 1;
    assert_eq!(fx("{ip6: 2001:db8::1}", 72, 16), v6);
    assert_eq!(fx("{raw16: \"2001:db8::1\"}", 100, 16), v6);
    let mut mapped = [0u8; 16];
    mapped[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 1]);
    assert_eq!(fx("{ip6: \"::ffff:192.0.2.1\"}", 72, 16), mapped);
    assert_eq!(
        fx(
            "{ip6: {in6_u: {u6_addr8: [32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]}}}",
            72,
            16
        ),
        v6,
        "struct in6_addr also takes its struct form"
    );
    assert_eq!(fx("{ip4: 192.0.2.1}", 88, 4), [192, 0, 2, 1]);
    assert_eq!(fx("{raw4: 10.0.0.1}", 96, 4), [10, 0, 0, 1]);
    assert_eq!(fx("{raw4: [10, 0, 0, 2]}", 96, 4), [10, 0, 0, 2]);
    let e = fx_value();
    assert_eq!(
        msg(&e, "{mac: \"aa:bb:cc:dd:ee\"}"),
        "value.mac: expected a MAC address (like 02:00:00:00:00:01) for __u8[6], \
         found a string \"aa:bb:cc:dd:ee\""
    );
    assert_eq!(
        msg(&e, "{ip6: 10.0.0.1}"),
        "value.ip6: expected an IPv6 address for struct in6_addr, found a string \"10.0.0.1\""
    );
    assert_eq!(
        msg(&e, "{ip4: 1}"),
        "value.ip4: expected an IPv4 address for struct in_addr, found an integer"
    );
    assert_eq!(
        msg(&e, "{raw16: 1.2.3.4}"),
        "value.raw16: expected an IPv6 address for __u8[16], found a string \"1.2.3.4\""
    );
    let info = bundled_info("ratelimit");
    let key = key_encoder(&info, "rl_buckets");
    let bytes = ok(&key, "{family: 0x86dd, addr: \"fe80::1\"}");
    assert_eq!(bytes[..4], [0xdd, 0x86, 0, 0]);
    assert_eq!(bytes[4..6], [0xfe, 0x80]);
}

#[test]
fn hex_bytes() {
    let e = fx_value();
    let hex = format!("0x{}", "Ab".repeat(184));
    assert_eq!(ok(&e, &hex), vec![0xab; 184]);
    assert_eq!(
        fx("{inner: 0x01020304}", 24, 4),
        [1, 2, 3, 4],
        "memory order"
    );
    assert_eq!(fx("{inner: \"0X0102030a\"}", 24, 4), [1, 2, 3, 10]);
    assert_eq!(
        msg(&e, "{inner: 0x010203}"),
        "value.inner: expected 0x followed by 8 hex digits for struct fx_inner (4 bytes), \
         found an integer"
    );
    assert_eq!(
        msg(&e, "{inner: \"0x0102030g\"}"),
        "value.inner: expected 0x followed by 8 hex digits for struct fx_inner (4 bytes), \
         found a string \"0x0102030g\""
    );
    let raw = key_encoder(fixture(), "fx_sized");
    assert_eq!(raw.size(), 4);
    assert_eq!(ok(&raw, "0x01020304"), [1, 2, 3, 4]);
    assert_eq!(
        msg(&raw, "1"),
        "key: expected 0x followed by 8 hex digits for untyped bytes (4 bytes), found an integer"
    );
    let raw_value = value_encoder(fixture(), "fx_sized");
    assert_eq!(raw_value.size(), 12);
    let outer = value_encoder(fixture(), "fx_outer");
    assert_eq!(
        ok(&outer, "0x05000000"),
        [5, 0, 0, 0],
        "map-in-map values are raw fds"
    );
    let legacy = key_encoder(fixture(), "fx_legacy");
    assert_eq!(ok(&legacy, "0x00000000"), [0; 4]);
    assert_eq!(ok(&Encoder::raw(0, "x"), "0x"), Vec::<u8>::new());
}

#[test]
fn floats_and_pointers() {
    assert_eq!(fx("{ratio: 1.5}", 160, 4), 1.5f32.to_le_bytes());
    assert_eq!(fx("{ratio: -2}", 160, 4), (-2.0f32).to_le_bytes());
    assert_eq!(fx("{precise: .inf}", 168, 8), f64::INFINITY.to_le_bytes());
    assert_eq!(fx("{precise: 0x10}", 168, 8), 16.0f64.to_le_bytes());
    let e = fx_value();
    assert_eq!(
        msg(&e, "{ratio: 1e39}"),
        "value.ratio: 1e39 is out of range for float"
    );
    assert_eq!(
        msg(&e, "{ratio: \"1.5\"}"),
        "value.ratio: expected a number for float, found a string \"1.5\""
    );
    assert_eq!(
        msg(&e, "{ptr: 0}"),
        "value.ptr: pointers can't be set from config (char *)"
    );
    assert_eq!(
        msg(&e, "{ptr: 0x0000000000000000}"),
        "value.ptr: pointers can't be set from config (char *)"
    );
}

#[test]
fn globals() {
    let info = fixture();
    let rate =
        Encoder::global(&info.btf, info.global("sample_rate").expect("global")).expect("encoder");
    assert_eq!(ok(&rate, "10"), [10, 0, 0, 0]);
    assert_eq!(
        msg(&rate, "-1"),
        "sample_rate: -1 is out of range for __u32 (0 to 4294967295)"
    );
    let mode =
        Encoder::global(&info.btf, info.global("start_mode").expect("global")).expect("encoder");
    assert_eq!(ok(&mode, "FX_MODE_SLOW"), [2, 0, 0, 0]);
}

#[test]
fn big_endian_objects() {
    let info = inspect(&crate::btf::test_support::fixture_object_big_endian()).expect("BE");
    let value = value_encoder(&info, "fx_values");
    let bytes = ok(
        &value,
        "{count: 1, port_be: 8080, inner: {port: 8080}, flags: 5}",
    );
    assert_eq!(bytes[4..8], [0, 0, 0, 1]);
    assert_eq!(bytes[64..66], [0x1f, 0x90]);
    assert_eq!(bytes[24..26], [0x1f, 0x90]);
    assert_eq!(
        bytes[32] >> 5,
        5,
        "big-endian bitfields start at the most significant bit"
    );
    let key = key_encoder(&info, "fx_lpm_in_addr");
    assert_eq!(ok(&key, "10.0.0.0/8"), [0, 0, 0, 8, 10, 0, 0, 0]);
}

#[test]
fn layout_errors() {
    let btf = &fixture().btf;
    assert_eq!(
        Encoder::new(btf, 9999, "x").expect_err("no such type"),
        LayoutError::UnknownType { id: 9999 }
    );
    let func = btf
        .types()
        .find(|(_, t)| t.name == "fx_xdp")
        .map(|(id, _)| id)
        .expect("FUNC fx_xdp");
    assert_eq!(
        Encoder::new(btf, func, "x")
            .expect_err("a function")
            .to_string(),
        "function fx_xdp has no size, so it can't hold a key, value or global"
    );
}

proptest! {
    #[test]
    fn in_range_integers_encode_exactly(v in any::<i64>(), u in any::<u64>(), b in any::<u8>()) {
        let e = fx_value();
        let bytes = ok(&e, &format!("{{s64: {v}, total: {u}, tag: {b}, s16: {}}}", v as i16));
        prop_assert_eq!(&bytes[120..128], &v.to_le_bytes());
        prop_assert_eq!(&bytes[16..24], &u.to_le_bytes());
        prop_assert_eq!(bytes[0], b);
        prop_assert_eq!(&bytes[118..120], &(v as i16).to_le_bytes());
        let hex = ok(&e, &format!("{{total: {u:#x}}}"));
        prop_assert_eq!(&hex[16..24], &u.to_le_bytes());
    }

    #[test]
    fn out_of_range_integers_are_rejected(v in 256i64..100_000, n in 1i64..1000) {
        let e = fx_value();
        let too_big = format!("{{tag: {v}}}");
        let too_small = format!("{{tag: -{n}}}");
        prop_assert!(e.encode(&yaml(&too_big), &mut Vec::new()).is_err());
        prop_assert!(e.encode(&yaml(&too_small), &mut Vec::new()).is_err());
    }

    #[test]
    fn cidrs_encode_to_network_and_prefix(addr in any::<u32>(), prefix in 0u32..=32) {
        let info = bundled_info("blocklist");
        let key = key_encoder(&info, "deny_v4");
        let network = if prefix == 0 { 0 } else { addr & (u32::MAX << (32 - prefix)) };
        let text = format!("{}/{prefix}", std::net::Ipv4Addr::from(network));
        let bytes = ok(&key, &text);
        prop_assert_eq!(&bytes[..4], &prefix.to_le_bytes());
        prop_assert_eq!(&bytes[4..], &network.to_be_bytes());
        if network != addr {
            let text = format!("{}/{prefix}", std::net::Ipv4Addr::from(addr));
            let e = err(&key, &text);
            let is_host_bits = matches!(e.reason, EncodeErrorKind::HostBitsSet { .. });
            prop_assert!(is_host_bits);
        }
    }
}

/// `cargo test --release -p reconciler --lib bench_lpm_keys -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn bench_lpm_keys() {
    const N: usize = 1_000_000;
    let info = bundled_info("blocklist");
    let key = key_encoder(&info, "deny_v4");
    let nodes: Vec<_> = (0..N as u32)
        .map(|i| {
            let [a, b, c, d] = (0x0a00_0000 | i).to_be_bytes();
            crate::btf::test_support::scalar(
                &format!("{a}.{b}.{c}.{d}/32"),
                crate::config::yaml::ScalarStyle::Plain,
            )
        })
        .collect();
    // The best of a few passes: the machine may be busy with other work.
    let mut best = std::time::Duration::MAX;
    for _ in 0..5 {
        let mut out = Vec::with_capacity(N * key.size());
        let start = std::time::Instant::now();
        for node in &nodes {
            key.encode(node, &mut out).expect("valid key");
        }
        best = best.min(start.elapsed());
        assert_eq!(out.len(), N * 8);
        assert_eq!(out[N * 8 - 8..], [32, 0, 0, 0, 10, 15, 66, 63]);
    }
    println!(
        "encoded {N} LPM keys in {best:?} (best of 5): {:.1} ns/key",
        best.as_nanos() as f64 / N as f64
    );
}
