//! BTF: type information of eBPF objects, and YAML values ↔ bytes by BTF type.
