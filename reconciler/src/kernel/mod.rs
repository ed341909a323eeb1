//! The thin layer over the kernel: raw `bpf()` calls, byte-oriented maps,
//! aya-based loading, bpffs, netns and netlink. Nothing above this module
//! makes a syscall.

pub mod bpffs;
pub mod loader;
pub mod map;
pub mod netlink;
pub mod netns;
pub mod sys;
pub mod tc;
pub mod xdp;

pub use map::{ByteMap, MapError};
