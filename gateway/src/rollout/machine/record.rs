//! Placeholder until the record branch lands (not committed).
use std::time::{Instant, SystemTime};

use gateway_common::VARIANT_COUNT;
use serde_json::{Value, json};

use super::Rollout;
use crate::kernel::KernelStats;
use crate::metrics::VariantStats;

pub(crate) fn to_json(r: &Rollout, _now: Instant, _wall_now: SystemTime) -> Value {
    json!({ "step": r.step })
}

pub(crate) fn from_json(
    _v: &Value,
    _now: Instant,
    _wall_now: SystemTime,
    _baseline: [VariantStats; VARIANT_COUNT],
    _kernel: Option<KernelStats>,
) -> Result<Rollout, String> {
    Err("not yet".into())
}
