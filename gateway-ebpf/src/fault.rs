//! Test-only fault injection, an eBPF object of its own (`gateway-fault`): a `tc`
//! classifier for `lo` ingress that drops one in N TCP segments carrying payload towards
//! one destination port.
//!
//! Built next to the production object by `gateway/build.rs` (aya-build builds every
//! binary of this crate) but never embedded in `canarygate`: only the end-to-end tests
//! load it (`tests/build.rs` hands them its path), through TCX, so no qdisc is left
//! behind, to put real loss between the gateway and one deployment: the segment has left
//! the sender, so the sender's TCP really retransmits it. On the host target this is an
//! empty binary, like `main.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so a loaded
    // program never gets here.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The classifier and its map (compiled for the BPF target only).
#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
    use aya_ebpf::helpers::bpf_get_prandom_u32;
    use aya_ebpf::macros::{classifier, map};
    use aya_ebpf::maps::Array;
    use aya_ebpf::programs::TcContext;
    use gateway_common::FaultConfig;

    /// Ethernet header length (`lo` carries an all-zero one).
    const ETH_LEN: usize = 14;
    /// `ETH_P_IP`, big-endian on the wire.
    const ETH_P_IP: u16 = 0x0800;
    /// `IPPROTO_TCP`.
    const IPPROTO_TCP: u8 = 6;

    /// Index 0: which port and how often (all zero: off).
    #[map]
    static FAULT: Array<FaultConfig> = Array::with_max_entries(1, 0);

    /// Drops the configured share of data segments; passes everything else.
    #[classifier]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the program macro hands the context over by value"
    )]
    pub(crate) fn cg_fault_drop(ctx: TcContext) -> i32 {
        if should_drop(&ctx).unwrap_or(false) {
            TC_ACT_SHOT
        } else {
            TC_ACT_OK
        }
    }

    fn should_drop(ctx: &TcContext) -> Result<bool, i64> {
        let Some(cfg) = FAULT.get(0) else {
            return Ok(false);
        };
        if cfg.one_in == 0 {
            return Ok(false);
        }
        if u16::from_be(ctx.load::<u16>(12)?) != ETH_P_IP {
            return Ok(false);
        }
        let ver_ihl: u8 = ctx.load(ETH_LEN)?;
        let ip_len = usize::from(ver_ihl & 0x0f) * 4;
        if ctx.load::<u8>(ETH_LEN + 9)? != IPPROTO_TCP {
            return Ok(false);
        }
        let total = usize::from(u16::from_be(ctx.load::<u16>(ETH_LEN + 2)?));
        let tcp = ETH_LEN + ip_len;
        if u32::from(u16::from_be(ctx.load::<u16>(tcp + 2)?)) != cfg.port {
            return Ok(false);
        }
        let tcp_len = usize::from(ctx.load::<u8>(tcp + 12)? >> 4) * 4;
        if total <= ip_len + tcp_len {
            return Ok(false);
        }
        // SAFETY: a helper without arguments or side effects.
        let r = unsafe { bpf_get_prandom_u32() };
        Ok(r % cfg.one_in == 0)
    }
}
