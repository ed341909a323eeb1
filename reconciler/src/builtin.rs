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
        assert_eq!(function_names(), ["blocklist", "counter", "ratelimit"]);
        let root = object(ObjectKind::Root, "xdp_root").expect("xdp root embedded");
        assert_eq!(&root[..4], b"\x7fELF");
        assert_eq!(
            root.as_ptr() as usize % 4,
            0,
            "aya needs 4-byte aligned objects"
        );
    }
}
