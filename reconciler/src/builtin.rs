//! The eBPF objects compiled from `ebpf/` by build.rs and embedded in the binary.

/// What an embedded object is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A chain's root program (`ebpf/root/`).
    Root,
    /// A bundled KF, usable as `program: {builtin: NAME}` (`ebpf/functions/`).
    Function,
    /// A benchmark baseline (`ebpf/bench/`), never loaded by kfd itself.
    Bench,
}

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// The ELF bytes of an embedded object of the given kind, by file stem.
pub fn object(kind: ObjectKind, name: &str) -> Option<&'static [u8]> {
    OBJECTS
        .iter()
        .find(|(k, n, _)| *k == kind && *n == name)
        .map(|(_, _, bytes)| *bytes)
}

/// Names of the bundled KFs, sorted.
pub fn function_names() -> Vec<&'static str> {
    let mut names: Vec<_> = OBJECTS
        .iter()
        .filter(|(k, _, _)| *k == ObjectKind::Function)
        .map(|(_, n, _)| *n)
        .collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_functions_are_embedded() {
        assert_eq!(
            function_names(),
            [
                "blocklist",
                "blocklist-swap",
                "counter",
                "mark",
                "ratelimit"
            ]
        );
        let root = object(ObjectKind::Root, "xdp_root").expect("xdp root embedded");
        assert_eq!(&root[..4], b"\x7fELF");
        assert_eq!(
            root.as_ptr() as usize % 4,
            0,
            "aya needs 4-byte aligned objects"
        );
    }
}

/// A chain's root program, ready to load.
#[derive(Debug)]
pub struct RootImage {
    /// The ELF object.
    pub bytes: &'static [u8],
    /// The program to load.
    pub symbol: &'static str,
    /// Shapes of the chain maps (`kf_*`) it declares, by name.
    pub chain_maps: std::collections::BTreeMap<String, crate::model::MapShape>,
}

/// Why a root program is not available.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// This build has no root for the hook.
    #[error("no root program for hook {hook} in this build")]
    Unsupported {
        /// The hook.
        hook: crate::model::Hook,
    },
    /// The embedded object does not parse (a build problem).
    #[error(transparent)]
    Object(#[from] crate::btf::ObjectError),
}

/// The root program for a hook, parsed once.
pub fn root(hook: crate::model::Hook) -> Result<&'static RootImage, RootError> {
    use crate::model::Hook;
    use std::sync::OnceLock;
    static XDP: OnceLock<RootImage> = OnceLock::new();
    static TC: OnceLock<RootImage> = OnceLock::new();
    // One TC root serves ingress and egress: the attach type decides.
    let (cell, name, symbol) = match hook {
        Hook::Xdp => (&XDP, "xdp_root", "kf_root_xdp"),
        Hook::TcIngress | Hook::TcEgress => (&TC, "tc_root", "kf_root_tc"),
    };
    if let Some(img) = cell.get() {
        return Ok(img);
    }
    let bytes = object(ObjectKind::Root, name).ok_or(RootError::Unsupported { hook })?;
    let info = crate::btf::inspect(bytes)?;
    let chain_maps = info
        .maps
        .iter()
        .filter(|m| crate::layout::CHAIN_MAPS.contains(&m.name.as_str()))
        .map(|m| (m.name.clone(), shape_of_def(m)))
        .collect();
    Ok(cell.get_or_init(|| RootImage {
        bytes,
        symbol,
        chain_maps,
    }))
}

/// The shape of a map definition.
pub fn shape_of_def(m: &crate::btf::MapDef) -> crate::model::MapShape {
    crate::model::MapShape {
        map_type: m.map_type,
        key_size: m.key_size,
        value_size: m.value_size,
        max_entries: m.max_entries,
        map_flags: m.map_flags,
    }
}
