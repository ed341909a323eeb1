//! BTF: type information of eBPF objects, and YAML values ↔ bytes by BTF type.
//!
//! - [`types`]: the `.BTF` parser ([`Btf`]).
//! - [`object`]: what an eBPF ELF object holds ([`inspect`] → [`ObjectInfo`]).
//! - [`encode`]: YAML config values → key/value/global bytes ([`Encoder`]); its
//!   module documentation is the contract of how config values are written.
//! - [`decode`]: bytes → YAML flow text for display ([`Decoder`]).
//! - [`elfpatch`]: a copy of an object with the section names aya-obj
//!   refuses renamed, so libbpf-style objects load unchanged.

pub mod decode;
pub mod elfpatch;
pub mod encode;
mod layout;
pub mod object;
mod text;
pub mod types;

#[cfg(test)]
mod test_support;

pub use decode::Decoder;
pub use encode::{AddressKind, EncodeError, EncodeErrorKind, Encoder};
pub use layout::LayoutError;
pub use object::{
    GlobalVar, MapDef, MapDefError, MapSource, ObjectError, ObjectInfo, ProgramInfo, inspect,
};
pub use types::{Btf, BtfError, Endian, Type, TypeKind};
