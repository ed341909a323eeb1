//! Decoder tests: exact texts, and the round trip encode(decode(bytes)) == bytes.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::btf::encode::Encoder;
use crate::btf::object::{ObjectInfo, inspect};
use crate::btf::test_support::{bundled, fixture_object, yaml};
use crate::btf::types::TypeKind;

fn fixture() -> &'static ObjectInfo {
    static INFO: OnceLock<ObjectInfo> = OnceLock::new();
    INFO.get_or_init(|| inspect(&fixture_object()).expect("fixture inspects"))
}

fn bundled_infos() -> &'static [ObjectInfo] {
    static INFOS: OnceLock<Vec<ObjectInfo>> = OnceLock::new();
    INFOS.get_or_init(|| {
        ["blocklist", "ratelimit", "counter"]
            .iter()
            .map(|name| inspect(bundled(name)).expect("bundled object inspects"))
            .collect()
    })
}

fn bundled_info(name: &str) -> &'static ObjectInfo {
    let index = ["blocklist", "ratelimit", "counter"]
        .iter()
        .position(|n| *n == name)
        .expect("a bundled KF");
    &bundled_infos()[index]
}

fn key_decoder(info: &ObjectInfo, map: &str) -> Decoder {
    Decoder::map_key(&info.btf, info.map(map).expect("map")).expect("key decoder")
}

fn value_decoder(info: &ObjectInfo, map: &str) -> Decoder {
    Decoder::map_value(&info.btf, info.map(map).expect("map")).expect("value decoder")
}

/// Decodes, reads the text back as YAML, encodes: must give the same bytes.
/// The text is read both by the tests' own flow reader and by kfd's config
/// parser, which is what reads it in production.
fn round_trip(decoder: &Decoder, encoder: &Encoder, bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = decoder.decode(bytes);
    let parsed = crate::config::yaml::parse(&text)
        .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?
        .ok_or_else(|| TestCaseError::fail(format!("{text}: an empty document")))?;
    for node in [yaml(&text), parsed] {
        let mut again = Vec::new();
        encoder
            .encode(&node, &mut again)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(again.as_slice(), bytes, "through {}", text);
    }
    Ok(())
}

#[test]
fn lpm_keys() {
    let info = bundled_info("blocklist");
    let v4 = key_decoder(info, "deny_v4");
    assert_eq!(v4.decode(&[24, 0, 0, 0, 192, 0, 2, 0]), "192.0.2.0/24");
    assert_eq!(v4.decode(&[32, 0, 0, 0, 10, 1, 2, 3]), "10.1.2.3/32");
    assert_eq!(v4.decode(&[0; 8]), "0.0.0.0/0");
    assert_eq!(
        v4.decode(&[24, 0, 0, 0, 192, 0, 2, 1]),
        "{prefixlen: 24, addr: 192.0.2.1}",
        "host bits set: the exact mapping form"
    );
    assert_eq!(
        v4.decode(&[40, 0, 0, 0, 10, 0, 0, 0]),
        "{prefixlen: 40, addr: 10.0.0.0}"
    );
    let v6 = key_decoder(info, "allow_v6");
    let mut key = vec![32, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8];
    key.extend([0; 12]);
    assert_eq!(v6.decode(&key), "\"2001:db8::/32\"");
    assert_eq!(value_decoder(info, "deny_v4").decode(&[1]), "1");
}

#[test]
fn structs_and_arrays() {
    let info = bundled_info("ratelimit");
    let config = value_decoder(info, "rl_config");
    let mut bytes = 100u64.to_le_bytes().to_vec();
    bytes.extend(10u64.to_le_bytes());
    assert_eq!(config.decode(&bytes), "{rate_pps: 100, burst: 10}");
    let key = key_decoder(info, "rl_buckets");
    let mut bytes = vec![0x00, 0x08, 0, 0, 10, 0, 0, 1];
    bytes.extend([0; 12]);
    assert_eq!(
        key.decode(&bytes),
        "{family: 2048, pad: 0, addr: \"a00:1::\"}"
    );
    let stats = value_decoder(bundled_info("counter"), "kf_stats");
    let mut bytes = vec![0u8; 128];
    bytes[8] = 7;
    assert_eq!(
        stats.decode(&bytes),
        "{verdicts: [0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}"
    );
}

#[test]
fn every_fixture_field() {
    let info = fixture();
    let encoder =
        Encoder::map_value(&info.btf, info.map("fx_values").expect("map")).expect("encoder");
    let decoder = value_decoder(info, "fx_values");
    let text = "{tag: 1, count: 2, mode: FX_MODE_SLOW, total: 3, inner: {port: 80, nport: 443}, \
                u: {word: 4}, flags: 5, level: 6, delta: -7, wide: 8, list: [9, 10, 11], \
                label: \"hi \\\"there\\\"\", port_be: 8080, mac: \"02:00:00:00:00:01\", \
                ip6: \"2001:db8::1\", ip4: 192.0.2.1, ip4be: 198.51.100.7, raw4: 10.0.0.1, \
                raw16: \"::1\", s8: -8, s16: -16, s64: -64, on: true, small: FX_SMALL_B, \
                neg: FX_NEG_MINUS, be64: 12345678901, pair: [{port: 1, nport: 2}, {port: 3, nport: 4}], \
                ratio: 0.1, precise: -2.5, anon_a: 12, anon_b: 13, \
                alt_word: 14}";
    let mut bytes = Vec::new();
    encoder.encode(&yaml(text), &mut bytes).expect("encodes");
    assert_eq!(decoder.decode(&bytes), text);
    // A pointer that is not null can only be shown as bytes.
    bytes[152] = 1;
    assert!(
        decoder
            .decode(&bytes)
            .contains(", ptr: 0x0100000000000000, ratio: 0.1,")
    );
}

#[test]
fn fallbacks() {
    let info = fixture();
    let decoder = value_decoder(info, "fx_values");
    assert_eq!(decoder.decode(&[1, 2]), "0x0102", "wrong length: hex");
    assert_eq!(Decoder::raw(3).decode(&[0xab, 0, 1]), "0xab0001");
    assert_eq!(
        key_decoder(info, "fx_sized").decode(&[1, 2, 3, 4]),
        "0x01020304"
    );
    let mode =
        Decoder::global(&info.btf, info.global("start_mode").expect("global")).expect("decoder");
    assert_eq!(mode.decode(&[1, 0, 0, 0]), "FX_MODE_FAST");
    assert_eq!(mode.decode(&[9, 0, 0, 0]), "9", "no enumerator: the number");
    let greeting =
        Decoder::global(&info.btf, info.global("greeting").expect("global")).expect("decoder");
    assert_eq!(greeting.decode(b"hi\0\0\0\0\0\0"), "\"hi\"");
    assert_eq!(
        greeting.decode(b"hi\0x\0\0\0\0"),
        "[104, 105, 0, 120, 0, 0, 0, 0]"
    );
    assert_eq!(
        greeting.decode(b"12345678"),
        "[49, 50, 51, 52, 53, 54, 55, 56]"
    );
    let mut bytes = vec![0u8; 184];
    bytes[128] = 2; // _Bool
    assert!(decoder.decode(&bytes).contains("on: 2,"));
}

/// Zeroes what the encoder never writes (padding, pointers) and makes
/// `_Bool`s and floats canonical, so random bytes are a valid encoding.
fn canonical_fx_value(info: &ObjectInfo, bytes: &mut [u8]) {
    let btf = &info.btf;
    let id = btf.find("fx_value").expect("struct fx_value");
    let Some(TypeKind::Struct(s)) = btf.ty(id).map(|t| &t.kind) else {
        panic!("fx_value is a struct");
    };
    let mut covered = vec![false; bytes.len()];
    for m in &s.members {
        let start = (m.bit_offset / 8) as usize;
        let size = if m.bitfield_size > 0 {
            (m.bit_offset as usize % 8 + usize::from(m.bitfield_size)).div_ceil(8)
        } else {
            btf.size_of(m.ty).expect("sized") as usize
        };
        let resolved = btf.ty(btf.resolve(m.ty)).expect("type");
        match &resolved.kind {
            TypeKind::Ptr { .. } => continue,
            TypeKind::Int(int) if int.bool => bytes[start] &= 1,
            TypeKind::Float { size: 4 } => {
                let b: [u8; 4] = bytes[start..start + 4].try_into().expect("4 bytes");
                if f32::from_le_bytes(b).is_nan() {
                    bytes[start..start + 4].fill(0);
                }
            }
            TypeKind::Float { size: 8 } => {
                let b: [u8; 8] = bytes[start..start + 8].try_into().expect("8 bytes");
                if f64::from_le_bytes(b).is_nan() {
                    bytes[start..start + 8].fill(0);
                }
            }
            _ => {}
        }
        covered[start..start + size].fill(true);
    }
    for (byte, covered) in bytes.iter_mut().zip(covered) {
        if !covered {
            *byte = 0;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every key and value type of the bundled KFs.
    #[test]
    fn bundled_maps_round_trip(seed in proptest::collection::vec(any::<u8>(), 128), prefix in 0u32..=128) {
        for info in bundled_infos() {
            for map in &info.maps {
                for key in [true, false] {
                    let (decoder, encoder) = if key {
                        (Decoder::map_key(&info.btf, map), Encoder::map_key(&info.btf, map))
                    } else {
                        (Decoder::map_value(&info.btf, map), Encoder::map_value(&info.btf, map))
                    };
                    let (decoder, encoder) = (decoder.expect("decoder"), encoder.expect("encoder"));
                    let mut bytes: Vec<u8> = seed.iter().copied().cycle().take(decoder.size()).collect();
                    if key && map.map_type == crate::btf::object::BPF_MAP_TYPE_LPM_TRIE {
                        // A canonical CIDR: prefix within the address, host bits clear.
                        let max = (bytes.len() as u32 - 4) * 8;
                        let prefix = prefix % (max + 1);
                        bytes[..4].copy_from_slice(&prefix.to_le_bytes());
                        crate::btf::text::mask_host_bits(&mut bytes[4..], prefix);
                    }
                    round_trip(&decoder, &encoder, &bytes)?;
                }
            }
        }
    }

    /// Any LPM key read from the kernel decodes; a canonical CIDR round-trips,
    /// and any other (a prefix past 32 bits, host bits set: what drift can
    /// leave) decodes to the exact mapping form, which config cannot write:
    /// encoding it is refused with the CIDR text's checks.
    #[test]
    fn any_lpm_key_decodes_and_only_canonical_ones_encode(bytes in proptest::array::uniform8(any::<u8>())) {
        let info = bundled_info("blocklist");
        let map = info.map("deny_v4").expect("map");
        let decoder = Decoder::map_key(&info.btf, map).expect("decoder");
        let encoder = Encoder::map_key(&info.btf, map).expect("encoder");
        let prefix = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let canonical = prefix <= 32 && !crate::btf::text::host_bits_set(&bytes[4..], prefix);
        if canonical {
            round_trip(&decoder, &encoder, &bytes)?;
        } else {
            let text = decoder.decode(&bytes);
            prop_assert!(text.starts_with("{prefixlen: "), "{}", text);
            let err = encoder.encode(&yaml(&text), &mut Vec::new()).expect_err("not canonical");
            prop_assert!(
                matches!(err.reason, crate::btf::EncodeErrorKind::PrefixTooLong { .. } | crate::btf::EncodeErrorKind::HostBitsSet { .. }),
                "{}: {}", text, err
            );
        }
    }

    /// The fixture's struct with every kind of field.
    #[test]
    fn fixture_value_round_trips(seed in proptest::collection::vec(any::<u8>(), 184)) {
        let info = fixture();
        let map = info.map("fx_values").expect("map");
        let decoder = Decoder::map_value(&info.btf, map).expect("decoder");
        let encoder = Encoder::map_value(&info.btf, map).expect("encoder");
        let mut bytes = seed;
        canonical_fx_value(info, &mut bytes);
        round_trip(&decoder, &encoder, &bytes)?;
    }

    /// Every global of the fixture, including char strings.
    #[test]
    fn fixture_globals_round_trip(seed in proptest::collection::vec(any::<u8>(), 16), text in "[ -~]{0,7}") {
        let info = fixture();
        for var in &info.globals {
            let decoder = Decoder::global(&info.btf, var).expect("decoder");
            let encoder = Encoder::global(&info.btf, var).expect("encoder");
            let bytes: Vec<u8> = seed.iter().copied().cycle().take(decoder.size()).collect();
            round_trip(&decoder, &encoder, &bytes)?;
        }
        let greeting = info.global("greeting").expect("global");
        let decoder = Decoder::global(&info.btf, greeting).expect("decoder");
        let encoder = Encoder::global(&info.btf, greeting).expect("encoder");
        let mut bytes = text.into_bytes();
        bytes.resize(8, 0);
        round_trip(&decoder, &encoder, &bytes)?;
    }
}
