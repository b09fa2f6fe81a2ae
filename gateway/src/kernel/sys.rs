//! The two things the kernel module needs below aya: writing a socket's tag with one raw
//! `bpf(2)` call from any worker thread (aya's `SkStorage::insert` takes `&mut self`,
//! which would need a lock shared by every worker), and reading the process's
//! capabilities to say precisely why loading is not allowed.
//!
//! This is the only place in the gateway with `unsafe` for kernel accounting.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use aya::maps::MapData;
use gateway_common::SockTag;

use super::KernelError;

/// fd of the active `SOCK_TAGS` map, or -1 when accounting is off. A process runs at
/// most one [`TagMap`] at a time (it moves the whole process into its cgroup).
static TAG_MAP_FD: AtomicI32 = AtomicI32::new(-1);

/// `BPF_MAP_UPDATE_ELEM` from `linux/bpf.h`.
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;

/// The `map_elem` member of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Keeps the socket storage map open while tags are written to it.
#[derive(Debug)]
pub(super) struct TagMap {
    /// Owned so the map's fd stays open until tagging stops.
    _map: MapData,
}

impl TagMap {
    /// Makes `map` the target of every tag from now on.
    pub(super) fn activate(map: MapData) -> TagMap {
        TAG_MAP_FD.store(map.fd().as_fd().as_raw_fd(), Ordering::Release);
        TagMap { _map: map }
    }
}

impl Drop for TagMap {
    fn drop(&mut self) {
        // A worker that loaded the fd just before this store may still issue its update
        // after the close; it then fails (EBADF) or, if the number was reused meanwhile,
        // is refused by the kernel for not naming a socket storage map. Both are counted
        // as a failed tag; no memory is touched.
        TAG_MAP_FD.store(-1, Ordering::Release);
    }
}

/// Writes a fresh [`SockTag`] of `class` for socket `fd`. `Ok` without a syscall when
/// accounting is off.
#[inline]
pub(super) fn tag(fd: i32, class: u32) -> Result<(), ()> {
    let map_fd = TAG_MAP_FD.load(Ordering::Acquire);
    if map_fd < 0 {
        return Ok(());
    }
    let key: i32 = fd;
    let value = SockTag::new(class);
    let attr = MapElemAttr {
        map_fd: map_fd as u32,
        pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: std::ptr::from_ref(&value) as u64,
        flags: BPF_ANY,
    };
    // SAFETY: `attr` is a valid, fully initialized `bpf_attr.map_elem` whose key and
    // value pointers refer to live locals of the sizes the map was created with (an i32
    // socket fd and a `SockTag`); the kernel only reads them during the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            std::ptr::from_ref(&attr),
            size_of::<MapElemAttr>(),
        )
    };
    if ret == 0 { Ok(()) } else { Err(()) }
}

/// `CAP_NET_ADMIN`, `CAP_SYS_ADMIN`, `CAP_BPF` bit numbers.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Fails with the capabilities the process has when it cannot load networking eBPF
/// programs (`CAP_SYS_ADMIN`, or `CAP_BPF` with `CAP_NET_ADMIN`).
pub(super) fn check_privileges() -> Result<(), KernelError> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // Cannot tell: let the loader find out.
        return Ok(());
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Ok(());
    };
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN)) {
        return Ok(());
    }
    let held: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
        .into_iter()
        .filter(|(cap, _)| has(*cap))
        .map(|(_, name)| name)
        .collect();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    Err(KernelError::Privileges {
        have: if held.is_empty() {
            format!("none of them (effective uid {uid})")
        } else {
            format!("only {} (effective uid {uid})", held.join(" and "))
        },
    })
}
