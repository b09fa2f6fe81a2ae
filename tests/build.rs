//! Hands the end-to-end tests the test-only eBPF object (`gateway-fault`, the fault
//! injector): `gateway/build.rs` builds it next to the production object, never embeds
//! it, and passes its path here through `links` metadata; this script sets
//! `CANARYGATE_FAULT_OBJECT` to that path for the tests crate, which includes the file.
//!
//! Without the eBPF toolchain the file is empty; the tests that need it then fail and
//! say why (`gateway::kernel_built()`).

use anyhow::Context as _;

/// Set by cargo from `gateway/build.rs`'s `cargo::metadata=fault_object=...`.
const FROM_GATEWAY: &str = "DEP_CANARYGATE_EBPF_FAULT_OBJECT";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={FROM_GATEWAY}");
    let path = std::env::var(FROM_GATEWAY)
        .with_context(|| format!("{FROM_GATEWAY} is not set (gateway/build.rs sets it)"))?;
    println!("cargo:rustc-env=CANARYGATE_FAULT_OBJECT={path}");
    Ok(())
}
