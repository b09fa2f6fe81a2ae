//! `sock_ops` accounting per traffic class (a variant, or downstream).
//!
//! User space tags a socket by writing a [`SockTag`] into socket-local storage right after
//! connect or accept. The tag cannot exist yet at the ESTABLISHED callback (monoio creates
//! and connects the socket itself), so this program asks for RTT, STATE and RETRANS
//! callbacks on every socket of the cgroup at ESTABLISHED and resolves the class at each
//! later callback.
//!
//! A fold compares the socket's TCP totals (`bytes_acked`, `bytes_received`, `segs_in`,
//! `segs_out`, `total_retrans`) with what the tag says was already counted and adds only
//! the difference to the class's per-CPU counters, so counters are exact once the socket
//! reaches `TCP_CLOSE`, whatever order the kernel bumps its fields in relative to the
//! callbacks. Every STATE and RETRANS callback folds. The RTT callback comes with every
//! ACK that yields a measurement, so it folds (and sends its RTT sample) at most once per
//! jiffy (1-4 ms) per socket, and always the first time: at low rates every exchange is
//! sampled; at high rates an ACK costs a tag lookup and a jiffies read, each connection
//! sends at most HZ samples a second, and counters lag by at most a jiffy per busy
//! connection.
//!
//! Client (downstream) sockets lose their RTT callback after the first fold: they are
//! counted as open then (with one RTT sample), and their totals are added at each
//! retransmit and at close. Untagged sockets lose every callback at their first RTT
//! callback. Per proxied request that leaves one RTT callback, on the upstream socket.

use core::ffi::c_void;
use core::intrinsics::AtomicOrdering;

use aya_ebpf::bindings::{
    BPF_RB_NO_WAKEUP, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    BPF_SOCK_OPS_RETRANS_CB, BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTT_CB,
    BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
};
use aya_ebpf::btf_maps::SkStorage;
use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_sk_storage_get};
use aya_ebpf::macros::{btf_map, map, sock_ops};
use aya_ebpf::maps::{PerCpuArray, RingBuf};
use aya_ebpf::programs::SockOpsContext;
use aya_log_ebpf::{debug, warn};
use gateway_common::{
    CLASS_DOWNSTREAM, CLASS_SLOTS, ClassCounters, RttSample, SockTag, TAG_CLOSED, TAG_NEW, TAG_OPEN,
};

/// `add(&raw mut (*c).$field, $n)` for a counter pointer `c`.
macro_rules! bump {
    ($c:expr, $field:ident, $n:expr) => {
        // SAFETY: `$c` is a non-null pointer to this CPU's counters (from the map lookup).
        add(unsafe { &raw mut (*$c).$field }, $n)
    };
}

/// Ring buffer size for RTT samples: 16-byte records, so 256k samples. User space drains
/// it every few milliseconds without wakeups (`BPF_RB_NO_WAKEUP`); a full buffer drops
/// samples and counts them in `rtt_dropped` rather than slowing the data path.
const RTT_RING_BYTES: u32 = 4 << 20;

/// The class of each tagged socket, and what was already counted for it.
#[btf_map]
static SOCK_TAGS: SkStorage<SockTag> = SkStorage::new();

/// Per-class counters, one copy per CPU.
#[map]
static CLASS_COUNTERS: PerCpuArray<ClassCounters> = PerCpuArray::with_max_entries(CLASS_SLOTS, 0);

/// RTT samples for user space's per-class HDR histograms.
#[map]
static RTT_SAMPLES: RingBuf = RingBuf::with_byte_size(RTT_RING_BYTES, 0);

/// Attached to the gateway's cgroup; always lets the socket operation proceed.
#[sock_ops]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn cg_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let flags = ctx.cb_flags()
                | BPF_SOCK_OPS_RTT_CB_FLAG
                | BPF_SOCK_OPS_STATE_CB_FLAG
                | BPF_SOCK_OPS_RETRANS_CB_FLAG;
            let _ = ctx.set_cb_flags(flags.cast_signed());
        }
        op @ (BPF_SOCK_OPS_RTT_CB | BPF_SOCK_OPS_STATE_CB | BPF_SOCK_OPS_RETRANS_CB) => {
            account(&ctx, op);
        }
        _ => {}
    }
    1
}

/// Adds what changed on a tagged socket since its previous callback to its class.
#[inline]
fn account(ctx: &SockOpsContext, op: u32) {
    // SAFETY: `ctx.ops` is the context pointer the kernel passed to this program.
    let ops = unsafe { &*ctx.ops };
    // SAFETY: reading the `sk` member of the context union; the verifier types it as a
    // possibly-null socket pointer, checked right below.
    let sk = unsafe { ops.__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: `sk` is a non-null socket from the context and `SOCK_TAGS` is a socket
    // storage map; without the CREATE flag the helper only looks the value up.
    let tag = unsafe {
        bpf_sk_storage_get(
            core::ptr::from_ref(&SOCK_TAGS).cast_mut().cast::<c_void>(),
            sk.cast(),
            core::ptr::null_mut(),
            0,
        )
    }
    .cast::<SockTag>();
    if tag.is_null() {
        if op == BPF_SOCK_OPS_RTT_CB {
            // User space tags a socket before it sends anything on it, and an RTT sample
            // needs our data acknowledged: this socket is not the proxy's (the admin
            // side, the demo's own peers) and never will be. Stop its callbacks.
            let _ = ctx.set_cb_flags(0);
        }
        return;
    }
    // SAFETY: a non-null storage value lives as long as the socket, and callbacks for one
    // socket are serialized by the socket lock.
    let tag = unsafe { &mut *tag };
    if tag.state == TAG_CLOSED {
        return;
    }
    let class = tag.class;
    if class >= CLASS_SLOTS {
        warn!(ctx, "socket tagged with unknown class {}", class);
        tag.state = TAG_CLOSED;
        return;
    }
    if op == BPF_SOCK_OPS_RTT_CB {
        // SAFETY: a helper without arguments.
        let now = unsafe { bpf_jiffies64() };
        if tag.state != TAG_NEW && now == tag.folded_jiffies {
            return;
        }
        tag.folded_jiffies = now;
    }
    let Some(c) = CLASS_COUNTERS.get_ptr_mut(class) else {
        return;
    };
    if tag.state == TAG_NEW {
        tag.state = TAG_OPEN;
        bump!(c, conns_opened, 1);
        if class == CLASS_DOWNSTREAM {
            // Client sockets: counted as open now, their totals added at each retransmit
            // and at close. Per-ACK callbacks on them would double the cost per request
            // for figures the variants do not need.
            let _ = ctx.set_cb_flags(
                (BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG).cast_signed(),
            );
        }
    }

    let acked = ops.bytes_acked;
    let received = ops.bytes_received;
    let (segs_in, segs_out, retrans) = (ops.segs_in, ops.segs_out, ops.total_retrans);
    bump!(c, bytes_acked, acked.wrapping_sub(tag.bytes_acked));
    bump!(c, bytes_received, received.wrapping_sub(tag.bytes_received));
    bump!(c, segs_in, u64::from(segs_in.wrapping_sub(tag.segs_in)));
    bump!(c, segs_out, u64::from(segs_out.wrapping_sub(tag.segs_out)));
    let new_retrans = retrans.wrapping_sub(tag.retrans);
    bump!(c, retrans, u64::from(new_retrans));
    tag.bytes_acked = acked;
    tag.bytes_received = received;
    tag.segs_in = segs_in;
    tag.segs_out = segs_out;
    tag.retrans = retrans;
    if new_retrans > 0 {
        debug!(
            ctx,
            "class {} retransmitted {} segment(s)", class, new_retrans
        );
    }

    match op {
        BPF_SOCK_OPS_RTT_CB => {
            // arg 0: the measured RTT in µs; srtt_us is the smoothed RTT << 3.
            let mut rtt = ctx.arg(0);
            if rtt == 0 {
                rtt = ops.srtt_us >> 3;
            }
            bump!(c, rtt_samples, 1);
            let sample = RttSample { class, rtt_us: rtt };
            if RTT_SAMPLES
                .output::<RttSample>(&sample, u64::from(BPF_RB_NO_WAKEUP))
                .is_err()
            {
                bump!(c, rtt_dropped, 1);
            }
        }
        // arg 1: the new state.
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            tag.state = TAG_CLOSED;
            bump!(c, conns_closed, 1);
        }
        _ => {}
    }
}

/// Adds `n` to one counter of this CPU's copy. Atomic (a BPF `lock add`) because a
/// program running in process context (a close) can be interrupted by one in softirq on
/// the same CPU; the BPF target has no `AtomicU64::fetch_add`, hence the intrinsic.
#[inline]
fn add(counter: *mut u64, n: u64) {
    if n == 0 {
        return;
    }
    // SAFETY: `counter` points into this CPU's slot of a per-CPU array value, which is
    // 8-byte aligned and lives for the whole program run.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n);
    }
}
