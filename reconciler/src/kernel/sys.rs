//! Raw `bpf(2)` calls that aya 0.14 does not expose: batch map operations,
//! byte-oriented lookups, object info, link create/update with compare, and
//! test runs. Command numbers and `bpf_attr` come from aya-obj's generated
//! bindings (hand-written numbers went wrong once; see KERNEL-NOTES.md).

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use aya_obj::generated::{
    bpf_attr, bpf_cmd, bpf_link_info, bpf_map_info, bpf_prog_info, bpf_prog_type,
};

/// A failed `bpf()` command, with the command's name.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SysError {
    /// The `bpf()` command or libc call that failed.
    pub call: &'static str,
    /// The errno it returned.
    #[source]
    pub source: io::Error,
}

impl SysError {
    fn last(call: &'static str) -> Self {
        Self {
            call,
            source: io::Error::last_os_error(),
        }
    }

    /// The errno, if the failure carried one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// Whether the failure was ENOENT (no such element, or end of iteration).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

/// The kernel's "not supported" errno, which libc does not name (ENOTSUPP).
pub const ENOTSUPP: i32 = 524;

type SysResult<T> = Result<T, SysError>;

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr, call: &'static str) -> SysResult<i64> {
    // SAFETY: attr is a valid, fully initialised bpf_attr of the size we pass;
    // every pointer stored in it points at a buffer that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        Err(SysError::last(call))
    } else {
        Ok(ret)
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain C union of integers; all-zero is its documented default.
    unsafe { mem::zeroed() }
}

fn fd_from_ret(ret: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

fn path_cstring(path: &Path, call: &'static str) -> SysResult<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError {
        call,
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// Opens a pinned object (map, program or link).
pub fn obj_get(path: &Path) -> SysResult<OwnedFd> {
    let c = path_cstring(path, "BPF_OBJ_GET")?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    bpf(bpf_cmd::BPF_OBJ_GET, &mut attr, "BPF_OBJ_GET").map(fd_from_ret)
}

/// Pins an object at `path` (which must not exist).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> SysResult<()> {
    let c = path_cstring(path, "BPF_OBJ_PIN")?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = raw(fd);
    bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr, "BPF_OBJ_PIN").map(drop)
}

/// What a new map looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapCreate<'a> {
    /// The object name the kernel shows (truncated to 15 bytes).
    pub name: &'a str,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` flags.
    pub map_flags: u32,
}

/// The BTF types of a new map's key and value, in a loaded BTF object.
#[derive(Debug, Clone, Copy)]
pub struct MapBtf<'a> {
    /// The loaded BTF.
    pub btf: BorrowedFd<'a>,
    /// The key's type id.
    pub key_type_id: u32,
    /// The value's type id.
    pub value_type_id: u32,
}

/// Creates a map. `inner` is the template map for map-in-map types.
pub fn map_create(spec: &MapCreate<'_>, inner: Option<BorrowedFd<'_>>) -> SysResult<OwnedFd> {
    map_create_typed(spec, inner, None)
}

/// [`map_create`] with the key and value's BTF types (so bpftool and the
/// kernel's checks of spin locks and timers know them).
pub fn map_create_typed(
    spec: &MapCreate<'_>,
    inner: Option<BorrowedFd<'_>>,
    btf: Option<MapBtf<'_>>,
) -> SysResult<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY (union access): writing the map-create member of a zeroed union.
    let a = unsafe { &mut attr.__bindgen_anon_1 };
    a.map_type = spec.map_type;
    a.key_size = spec.key_size;
    a.value_size = spec.value_size;
    a.max_entries = spec.max_entries;
    a.map_flags = spec.map_flags;
    if let Some(inner) = inner {
        a.inner_map_fd = raw(inner);
    }
    if let Some(b) = btf {
        a.btf_fd = raw(b.btf);
        a.btf_key_type_id = b.key_type_id;
        a.btf_value_type_id = b.value_type_id;
    }
    for (dst, src) in a
        .map_name
        .iter_mut()
        .zip(
            spec.name
                .bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
        )
        .take(15)
    {
        *dst = src as libc::c_char;
    }
    bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr, "BPF_MAP_CREATE").map(fd_from_ret)
}

/// Looks a key up; `Ok(false)` when absent. `value` must be the map's value size
/// (times the possible CPUs for per-CPU maps).
pub fn map_lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> SysResult<bool> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = raw(fd);
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
    match bpf(
        bpf_cmd::BPF_MAP_LOOKUP_ELEM,
        &mut attr,
        "BPF_MAP_LOOKUP_ELEM",
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes one element (`flags`: BPF_ANY, BPF_NOEXIST, BPF_EXIST).
pub fn map_update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> SysResult<()> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = raw(fd);
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_ptr() as u64;
    attr.__bindgen_anon_2.flags = flags;
    bpf(
        bpf_cmd::BPF_MAP_UPDATE_ELEM,
        &mut attr,
        "BPF_MAP_UPDATE_ELEM",
    )
    .map(drop)
}

/// Deletes one element; `Ok(false)` when it was already absent.
pub fn map_delete(fd: BorrowedFd<'_>, key: &[u8]) -> SysResult<bool> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = raw(fd);
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    match bpf(
        bpf_cmd::BPF_MAP_DELETE_ELEM,
        &mut attr,
        "BPF_MAP_DELETE_ELEM",
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key after `key` (or the first key when `key` is None); `Ok(false)` at the end.
pub fn map_next_key(fd: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> SysResult<bool> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = raw(fd);
    attr.__bindgen_anon_2.key = key.map_or(0, |k| k.as_ptr() as u64);
    attr.__bindgen_anon_2.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
    match bpf(
        bpf_cmd::BPF_MAP_GET_NEXT_KEY,
        &mut attr,
        "BPF_MAP_GET_NEXT_KEY",
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` call. `in_batch` is None for the first call;
/// the kernel writes the resume token to `out_batch`. Returns the number of
/// elements copied and whether the map is exhausted.
pub fn map_lookup_batch(
    fd: BorrowedFd<'_>,
    in_batch: Option<&[u8]>,
    out_batch: &mut [u8],
    keys: &mut [u8],
    values: &mut [u8],
    count: u32,
) -> SysResult<(u32, bool)> {
    let mut attr = zeroed_attr();
    // SAFETY (union access): writing the batch member of a zeroed union.
    let b = unsafe { &mut attr.batch };
    b.map_fd = raw(fd);
    b.in_batch = in_batch.map_or(0, |t| t.as_ptr() as u64);
    b.out_batch = out_batch.as_mut_ptr() as u64;
    b.keys = keys.as_mut_ptr() as u64;
    b.values = values.as_mut_ptr() as u64;
    b.count = count;
    let res = bpf(
        bpf_cmd::BPF_MAP_LOOKUP_BATCH,
        &mut attr,
        "BPF_MAP_LOOKUP_BATCH",
    );
    // SAFETY: the kernel wrote back the count in the same member.
    let done_count = unsafe { attr.batch.count };
    match res {
        Ok(_) => Ok((done_count, false)),
        Err(e) if e.is_not_found() => Ok((done_count, true)),
        Err(e) => Err(e),
    }
}

/// One `BPF_MAP_UPDATE_BATCH` call over `count` packed keys and values.
/// On error, the elements before the failing one were written; their number
/// is in the returned error's companion `Err((n, e))`.
pub fn map_update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
    elem_flags: u64,
) -> Result<u32, (u32, SysError)> {
    let mut attr = zeroed_attr();
    // SAFETY (union access): writing the batch member of a zeroed union.
    let b = unsafe { &mut attr.batch };
    b.map_fd = raw(fd);
    b.keys = keys.as_ptr() as u64;
    b.values = values.as_ptr() as u64;
    b.count = count;
    b.elem_flags = elem_flags;
    let res = bpf(
        bpf_cmd::BPF_MAP_UPDATE_BATCH,
        &mut attr,
        "BPF_MAP_UPDATE_BATCH",
    );
    // SAFETY: the kernel wrote back the count in the same member.
    let done = unsafe { attr.batch.count };
    res.map(|_| done).map_err(|e| (done, e))
}

/// One `BPF_MAP_DELETE_BATCH` call over `count` packed keys.
pub fn map_delete_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    count: u32,
) -> Result<u32, (u32, SysError)> {
    let mut attr = zeroed_attr();
    // SAFETY (union access): writing the batch member of a zeroed union.
    let b = unsafe { &mut attr.batch };
    b.map_fd = raw(fd);
    b.keys = keys.as_ptr() as u64;
    b.count = count;
    let res = bpf(
        bpf_cmd::BPF_MAP_DELETE_BATCH,
        &mut attr,
        "BPF_MAP_DELETE_BATCH",
    );
    // SAFETY: the kernel wrote back the count in the same member.
    let done = unsafe { attr.batch.count };
    res.map(|_| done).map_err(|e| (done, e))
}

fn obj_info<T>(fd: BorrowedFd<'_>, info: &mut T, call: &'static str) -> SysResult<()> {
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = raw(fd);
    attr.info.info_len = mem::size_of::<T>() as u32;
    attr.info.info = info as *mut T as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr, call).map(drop)
}

/// The kernel's view of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    /// Kernel id.
    pub id: u32,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` flags.
    pub map_flags: u32,
    /// Object name (up to 15 bytes).
    pub name: String,
}

fn c_name(name: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Map info by fd.
pub fn map_info(fd: BorrowedFd<'_>) -> SysResult<MapInfo> {
    // SAFETY: bpf_map_info is plain integers; zero is valid.
    let mut info: bpf_map_info = unsafe { mem::zeroed() };
    obj_info(fd, &mut info, "BPF_OBJ_GET_INFO_BY_FD(map)")?;
    Ok(MapInfo {
        id: info.id,
        map_type: info.type_,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
        name: c_name(&info.name),
    })
}

/// The kernel's view of a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    /// Kernel id.
    pub id: u32,
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// The kernel's tag: a hash of the instructions.
    pub tag: [u8; 8],
    /// Object name (up to 15 bytes).
    pub name: String,
    /// Ids of the maps the program uses.
    pub map_ids: Vec<u32>,
}

/// Program info by fd, including its map ids.
pub fn prog_info(fd: BorrowedFd<'_>) -> SysResult<ProgInfo> {
    // SAFETY: bpf_prog_info is plain integers; zero is valid.
    let mut info: bpf_prog_info = unsafe { mem::zeroed() };
    obj_info(fd, &mut info, "BPF_OBJ_GET_INFO_BY_FD(prog)")?;
    let nr = info.nr_map_ids;
    let mut map_ids = vec![0u32; nr as usize];
    if nr > 0 {
        // SAFETY: as above.
        let mut again: bpf_prog_info = unsafe { mem::zeroed() };
        again.nr_map_ids = nr;
        again.map_ids = map_ids.as_mut_ptr() as u64;
        obj_info(fd, &mut again, "BPF_OBJ_GET_INFO_BY_FD(prog maps)")?;
        map_ids.truncate(again.nr_map_ids.min(nr) as usize);
    }
    Ok(ProgInfo {
        id: info.id,
        prog_type: info.type_,
        tag: info.tag,
        name: c_name(&info.name),
        map_ids,
    })
}

/// The kernel's view of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Kernel id.
    pub id: u32,
    /// `BPF_LINK_TYPE_*`.
    pub link_type: u32,
    /// The attached program's id (0 once the link is defunct).
    pub prog_id: u32,
    /// For XDP/TCX/netkit links: the interface index, 0 when the interface is gone.
    pub ifindex: u32,
}

/// `BPF_LINK_TYPE_XDP`.
pub const BPF_LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_TCX`.
pub const BPF_LINK_TYPE_TCX: u32 = 11;

/// Link info by fd.
pub fn link_info(fd: BorrowedFd<'_>) -> SysResult<LinkInfo> {
    // SAFETY: bpf_link_info is plain integers; zero is valid.
    let mut info: bpf_link_info = unsafe { mem::zeroed() };
    obj_info(fd, &mut info, "BPF_OBJ_GET_INFO_BY_FD(link)")?;
    // SAFETY (union access): xdp, tcx and netkit all start with ifindex.
    let ifindex = match info.type_ {
        BPF_LINK_TYPE_XDP => unsafe { info.__bindgen_anon_1.xdp.ifindex },
        BPF_LINK_TYPE_TCX => unsafe { info.__bindgen_anon_1.tcx.ifindex },
        _ => 0,
    };
    Ok(LinkInfo {
        id: info.id,
        link_type: info.type_,
        prog_id: info.prog_id,
        ifindex,
    })
}

/// Opens a program by id.
pub fn prog_fd_by_id(id: u32) -> SysResult<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = id;
    bpf(
        bpf_cmd::BPF_PROG_GET_FD_BY_ID,
        &mut attr,
        "BPF_PROG_GET_FD_BY_ID",
    )
    .map(fd_from_ret)
}

/// Opens a map by id.
pub fn map_fd_by_id(id: u32) -> SysResult<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.map_id = id;
    bpf(
        bpf_cmd::BPF_MAP_GET_FD_BY_ID,
        &mut attr,
        "BPF_MAP_GET_FD_BY_ID",
    )
    .map(fd_from_ret)
}

fn next_id(cmd: bpf_cmd, start: u32, call: &'static str) -> SysResult<Option<u32>> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.start_id = start;
    match bpf(cmd, &mut attr, call) {
        // SAFETY: the kernel wrote next_id.
        Ok(_) => Ok(Some(unsafe { attr.__bindgen_anon_6.next_id })),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every program id currently loaded (used to count objects in tests and leak checks).
pub fn prog_ids() -> SysResult<Vec<u32>> {
    ids(bpf_cmd::BPF_PROG_GET_NEXT_ID, "BPF_PROG_GET_NEXT_ID")
}

/// Every map id currently loaded.
pub fn map_ids() -> SysResult<Vec<u32>> {
    ids(bpf_cmd::BPF_MAP_GET_NEXT_ID, "BPF_MAP_GET_NEXT_ID")
}

/// Every link id currently alive.
pub fn link_ids() -> SysResult<Vec<u32>> {
    ids(bpf_cmd::BPF_LINK_GET_NEXT_ID, "BPF_LINK_GET_NEXT_ID")
}

fn ids(cmd: bpf_cmd, call: &'static str) -> SysResult<Vec<u32>> {
    let mut out = Vec::new();
    let mut cur = 0;
    while let Some(id) = next_id(cmd, cur, call)? {
        out.push(id);
        cur = id;
    }
    Ok(out)
}

/// `BPF_XDP` attach type.
pub const BPF_XDP: u32 = aya_obj::generated::bpf_attach_type::BPF_XDP as u32;

/// Creates a link attaching `prog` at `target_ifindex` for `attach_type`
/// (`BPF_XDP` with XDP mode flags). Never falls back to netlink, so it can
/// never replace a program it does not own: the kernel answers EBUSY/EEXIST.
pub fn link_create(
    prog: BorrowedFd<'_>,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> SysResult<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY (union access): writing the link_create member of a zeroed union.
    let l = unsafe { &mut attr.link_create };
    l.__bindgen_anon_1.prog_fd = raw(prog);
    l.__bindgen_anon_2.target_ifindex = target_ifindex;
    l.attach_type = attach_type;
    l.flags = flags;
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr, "BPF_LINK_CREATE").map(fd_from_ret)
}

/// Replaces the program of a link; with `expected_old`, only if it still runs
/// that program (BPF_F_REPLACE), so a concurrent change is never overwritten.
pub fn link_update(
    link: BorrowedFd<'_>,
    new_prog: BorrowedFd<'_>,
    expected_old: Option<BorrowedFd<'_>>,
) -> SysResult<()> {
    let mut attr = zeroed_attr();
    // SAFETY (union access): writing the link_update member of a zeroed union.
    let u = unsafe { &mut attr.link_update };
    u.link_fd = raw(link);
    u.__bindgen_anon_1.new_prog_fd = raw(new_prog);
    if let Some(old) = expected_old {
        u.flags = aya_obj::generated::BPF_F_REPLACE;
        u.__bindgen_anon_2.old_prog_fd = raw(old);
    }
    bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr, "BPF_LINK_UPDATE").map(drop)
}

/// Detaches a link without waiting for its last fd to close.
pub fn link_detach(link: BorrowedFd<'_>) -> SysResult<()> {
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = raw(link);
    bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr, "BPF_LINK_DETACH").map(drop)
}

/// Result of a `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value for the last run.
    pub retval: u32,
    /// Average nanoseconds per run, as measured by the kernel.
    pub duration_ns: u32,
}

/// Runs a program `repeat` times on `data` in the kernel (no attachment needed).
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> SysResult<TestRun> {
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = zeroed_attr();
    attr.test.prog_fd = raw(prog);
    attr.test.data_in = data.as_ptr() as u64;
    attr.test.data_size_in = data.len() as u32;
    attr.test.data_out = out.as_mut_ptr() as u64;
    attr.test.data_size_out = out.len() as u32;
    attr.test.repeat = repeat;
    bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr, "BPF_PROG_TEST_RUN")?;
    // SAFETY: the kernel wrote retval and duration into the test member.
    let (retval, duration_ns) = unsafe { (attr.test.retval, attr.test.duration) };
    Ok(TestRun {
        retval,
        duration_ns,
    })
}

/// Whether `prog_type` is XDP.
pub fn is_xdp(prog_type: u32) -> bool {
    prog_type == bpf_prog_type::BPF_PROG_TYPE_XDP as u32
}

/// Number of possible CPUs, which sizes per-CPU map values.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad cpu list {text:?}")))
}

fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => n += b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// Borrow helper for callers holding an `OwnedFd`.
pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    fd.as_fd()
}

/// Makes a map read-only for user space (`.rodata` once filled).
pub fn map_freeze(fd: BorrowedFd<'_>) -> SysResult<()> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = raw(fd);
    bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr, "BPF_MAP_FREEZE").map(drop)
}

/// A refused `bpf()` load, with what the kernel's log said.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Refused {
    /// The syscall's failure.
    pub error: SysError,
    /// The kernel's log (the verifier's, for a program), possibly empty.
    pub log: String,
}

/// Runs a load command, first without a log (it is costly), then, if it
/// fails, again with a growing log buffer so the refusal can be explained.
fn load_with_log(
    mut attempt: impl FnMut(Option<&mut Vec<u8>>) -> SysResult<OwnedFd>,
) -> Result<OwnedFd, Refused> {
    let first = match attempt(None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut size = 1 << 20;
    loop {
        let mut log = vec![0u8; size];
        match attempt(Some(&mut log)) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.errno() == Some(libc::ENOSPC) && size < 1 << 26 => size *= 4,
            Err(e) => {
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]).into_owned();
                // The first error is the load's own; the retry's is the same
                // unless the log made it fail differently.
                let error = if e.errno() == first.errno() { e } else { first };
                return Err(Refused { error, log });
            }
        }
    }
}

/// Loads BTF (`BPF_BTF_LOAD`).
pub fn btf_load(bytes: &[u8]) -> Result<OwnedFd, Refused> {
    load_with_log(|log| {
        let mut attr = zeroed_attr();
        // SAFETY (union access): writing the BTF-load member of a zeroed union.
        let a = unsafe { &mut attr.__bindgen_anon_7 };
        a.btf = bytes.as_ptr() as u64;
        a.btf_size = bytes.len() as u32;
        if let Some(log) = log {
            a.btf_log_buf = log.as_mut_ptr() as u64;
            a.btf_log_size = log.len() as u32;
            a.btf_log_level = 1;
        }
        bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr, "BPF_BTF_LOAD").map(fd_from_ret)
    })
}

/// What `BPF_PROG_LOAD` gets.
#[derive(Debug)]
pub struct ProgLoad<'a> {
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// `BPF_*` attach type the program expects (0: none).
    pub expected_attach_type: u32,
    /// `BPF_F_*` program flags (e.g. `BPF_F_XDP_HAS_FRAGS`).
    pub flags: u32,
    /// The name the kernel shows (truncated to 15 bytes).
    pub name: &'a str,
    /// The instructions (8 bytes each), as the kernel's `struct bpf_insn`.
    pub insns: &'a [u8],
    /// The license, NUL-terminated.
    pub license: &'a std::ffi::CStr,
    /// The program's BTF, with its func_info and line_info records
    /// (`struct bpf_func_info`, `struct bpf_line_info`: 8 and 16 bytes).
    pub btf: Option<(BorrowedFd<'a>, &'a [u8], &'a [u8])>,
}

/// Loads a program (`BPF_PROG_LOAD`); a refusal carries the verifier's log.
pub fn prog_load(p: &ProgLoad<'_>) -> Result<OwnedFd, Refused> {
    load_with_log(|log| {
        let mut attr = zeroed_attr();
        // SAFETY (union access): writing the prog-load member of a zeroed union.
        let a = unsafe { &mut attr.__bindgen_anon_3 };
        a.prog_type = p.prog_type;
        a.expected_attach_type = p.expected_attach_type;
        a.prog_flags = p.flags;
        a.insns = p.insns.as_ptr() as u64;
        a.insn_cnt = (p.insns.len() / 8) as u32;
        a.license = p.license.as_ptr() as u64;
        for (dst, src) in a.prog_name.iter_mut().zip(
            p.name
                .bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
                .take(15),
        ) {
            *dst = src as libc::c_char;
        }
        if let Some((btf, func_info, line_info)) = p.btf {
            a.prog_btf_fd = raw(btf);
            if !func_info.is_empty() {
                a.func_info = func_info.as_ptr() as u64;
                a.func_info_cnt = (func_info.len() / 8) as u32;
                a.func_info_rec_size = 8;
            }
            if !line_info.is_empty() {
                a.line_info = line_info.as_ptr() as u64;
                a.line_info_cnt = (line_info.len() / 16) as u32;
                a.line_info_rec_size = 16;
            }
        }
        if let Some(log) = log {
            a.log_buf = log.as_mut_ptr() as u64;
            a.log_size = log.len() as u32;
            a.log_level = 1;
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr, "BPF_PROG_LOAD").map(fd_from_ret)
    })
}

/// The running kernel's (major, minor) version, from uname(2).
pub fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_str()
        .ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
