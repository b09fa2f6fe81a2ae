//! The kernel half of canarygate, the production eBPF object (`gateway-ebpf`): per-class
//! TCP accounting for the gateway's own sockets, and nothing else.
//!
//! Built by `gateway/build.rs` (aya-build, nightly, `bpfel-unknown-none`) and embedded in
//! the `canarygate` binary, which loads it at startup (`gateway/src/kernel.rs`). On the
//! host target this crate's binaries are empty so that `cargo clippy --workspace` and
//! `cargo build --workspace` work without the eBPF toolchain.
//!
//! - [`accounting`]: the `sock_ops` program. Every socket the gateway tags (an upstream
//!   socket with its variant, a client socket as downstream) is counted per class:
//!   connections opened and closed, bytes acked and received, segments, retransmits, and
//!   RTT samples sent through a ring buffer to user space's HDR histograms.
//!
//! The test-only fault injector is a second binary of this crate, `gateway-fault`
//! (`fault.rs`), so that it is a separate object which the gateway never embeds.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd`: the BPF target has no atomic read-modify-write in `core::sync::atomic`.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", expect(internal_features, reason = "atomic_xadd"))]

#[cfg(target_arch = "bpf")]
mod accounting;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so a loaded
    // program never gets here.
    unsafe { core::hint::unreachable_unchecked() }
}
