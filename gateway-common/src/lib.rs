//! Types shared by every side of canarygate: the user-space gateway and the eBPF
//! programs (`gateway-ebpf`) that account per variant in the kernel. `no_std`, `#[repr(C)]`-friendly,
//! no padding, so the same definitions can cross the user/kernel boundary unchanged.
#![no_std]

/// Parts per million: the unit of the canary share (1 ppm = 0.0001 %).
pub const PPM_MAX: u32 = 1_000_000;

/// Number of variants a route can send traffic to (stable and canary).
pub const VARIANT_COUNT: usize = 2;

/// Which deployment a request (or, later, a socket) belongs to.
///
/// `#[repr(u32)]` so it can be stored as-is in BPF map values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// The deployment that serves most traffic.
    Stable = 0,
    /// The new deployment that receives the configured share.
    Canary = 1,
}

impl Variant {
    /// Every variant, in index order.
    pub const ALL: [Variant; VARIANT_COUNT] = [Variant::Stable, Variant::Canary];

    /// Dense index for per-variant arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name used in logs, metrics labels and response headers.
    #[inline]
    pub const fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
        }
    }

    /// The variant stored under `raw`, if any.
    #[inline]
    pub const fn from_u32(raw: u32) -> Option<Variant> {
        match raw {
            0 => Some(Variant::Stable),
            1 => Some(Variant::Canary),
            _ => None,
        }
    }
}

const _: () = assert!(core::mem::size_of::<Variant>() == 4);

// ---------------------------------------------------------------------------------------
// Kernel accounting (gateway-ebpf <-> gateway::kernel). Every type below crosses the
// user/kernel boundary byte for byte: `#[repr(C)]`, `Copy`, no padding, size asserted.
// ---------------------------------------------------------------------------------------

/// Slots of the per-class counter array: one per traffic class a socket can be tagged
/// with. Variants use their [`Variant::index`]; [`CLASS_DOWNSTREAM`] is the last slot, so
/// new variants take the free slots in between without moving anything.
pub const CLASS_SLOTS: u32 = 8;

/// Class of client sockets the gateway accepted (the downstream side).
pub const CLASS_DOWNSTREAM: u32 = CLASS_SLOTS - 1;

const _: () = assert!(VARIANT_COUNT < CLASS_DOWNSTREAM as usize);

/// The class a socket is accounted under, for a deployment variant.
#[inline]
pub const fn variant_class(variant: Variant) -> u32 {
    variant as u32
}

/// [`SockTag::state`]: tagged by user space, not yet seen by the kernel program.
pub const TAG_NEW: u32 = 0;
/// [`SockTag::state`]: counted as established.
pub const TAG_OPEN: u32 = 1;
/// [`SockTag::state`]: counted as closed; nothing more is added for it.
pub const TAG_CLOSED: u32 = 2;

/// Socket-local storage value (`BPF_MAP_TYPE_SK_STORAGE`, key: the socket's fd).
///
/// User space writes it once per socket, right after connect or accept, with `class`
/// set and everything else zero. The `sock_ops` program then keeps the TCP totals it has
/// already added to the per-class counters here, so each fold adds only what changed
/// since the previous one (totals of the socket minus these).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTag {
    /// Traffic class: a [`Variant`] index or [`CLASS_DOWNSTREAM`].
    pub class: u32,
    /// [`TAG_NEW`], [`TAG_OPEN`] or [`TAG_CLOSED`].
    pub state: u32,
    /// `bytes_acked` already accounted.
    pub bytes_acked: u64,
    /// `bytes_received` already accounted.
    pub bytes_received: u64,
    /// `segs_in` already accounted.
    pub segs_in: u32,
    /// `segs_out` already accounted.
    pub segs_out: u32,
    /// `total_retrans` already accounted.
    pub retrans: u32,
    /// Keeps the size a multiple of 8 without implicit padding.
    pub reserved: u32,
    /// `bpf_jiffies64` of the last time the totals were added to the counters.
    pub folded_jiffies: u64,
}

impl SockTag {
    /// A fresh tag for a socket of `class`.
    #[inline]
    pub const fn new(class: u32) -> SockTag {
        SockTag {
            class,
            state: TAG_NEW,
            bytes_acked: 0,
            bytes_received: 0,
            segs_in: 0,
            segs_out: 0,
            retrans: 0,
            reserved: 0,
            folded_jiffies: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<SockTag>() == 48);

/// Per-class TCP counters, one copy per CPU (`BPF_MAP_TYPE_PERCPU_ARRAY`, index: class),
/// summed by user space on read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounters {
    /// Tagged connections the kernel saw established.
    pub conns_opened: u64,
    /// Tagged connections that reached `TCP_CLOSE`.
    pub conns_closed: u64,
    /// Payload bytes sent and acknowledged by the peer (`tcp_sock.bytes_acked`).
    pub bytes_acked: u64,
    /// Payload bytes received in order (`tcp_sock.bytes_received`).
    pub bytes_received: u64,
    /// Segments received, including pure ACKs (`segs_in`).
    pub segs_in: u64,
    /// Segments sent, including pure ACKs and retransmits (`segs_out`).
    pub segs_out: u64,
    /// Segments retransmitted (`total_retrans`).
    pub retrans: u64,
    /// RTT samples taken (each one also goes to the ring buffer).
    pub rtt_samples: u64,
    /// RTT samples lost because the ring buffer was full.
    pub rtt_dropped: u64,
}

impl ClassCounters {
    /// Adds `other` field by field (used to sum the per-CPU copies).
    #[inline]
    pub fn add(&mut self, other: &ClassCounters) {
        self.conns_opened = self.conns_opened.wrapping_add(other.conns_opened);
        self.conns_closed = self.conns_closed.wrapping_add(other.conns_closed);
        self.bytes_acked = self.bytes_acked.wrapping_add(other.bytes_acked);
        self.bytes_received = self.bytes_received.wrapping_add(other.bytes_received);
        self.segs_in = self.segs_in.wrapping_add(other.segs_in);
        self.segs_out = self.segs_out.wrapping_add(other.segs_out);
        self.retrans = self.retrans.wrapping_add(other.retrans);
        self.rtt_samples = self.rtt_samples.wrapping_add(other.rtt_samples);
        self.rtt_dropped = self.rtt_dropped.wrapping_add(other.rtt_dropped);
    }
}

const _: () = assert!(core::mem::size_of::<ClassCounters>() == 9 * 8);

/// One RTT measurement, sent through the ring buffer to user space's HDR histograms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttSample {
    /// Traffic class of the socket.
    pub class: u32,
    /// Measured round-trip time in microseconds.
    pub rtt_us: u32,
}

const _: () = assert!(core::mem::size_of::<RttSample>() == 8);

/// Test-only fault injection ([`FaultConfig`] in the `FAULT` array, index 0): drop one in
/// `one_in` TCP segments that carry payload towards `port` (host byte order).
/// `one_in == 0` disables it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Destination TCP port whose data segments are dropped.
    pub port: u32,
    /// Drop one segment in this many; 0 turns the fault off.
    pub one_in: u32,
}

const _: () = assert!(core::mem::size_of::<FaultConfig>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers, and has no
    // padding (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SockTag {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClassCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RttSample {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_u32(v as u32), Some(v));
            assert_eq!(Variant::ALL[v.index()], v);
        }
        assert_eq!(Variant::from_u32(2), None);
    }
}
