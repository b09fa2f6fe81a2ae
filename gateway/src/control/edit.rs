//! The edits admin commands make to one route's configuration, as pure functions over a
//! copy of it: [`super::state::Control`] applies one under its lock, keeps the copy only
//! when the edit (and, in fleet mode, the store) succeeds, and then sets the route's
//! split to the share the copy has.

use super::ControlError;
use crate::config::RouteConfig;
use crate::config::value::format_percent;

pub(super) fn set_route_percent(r: &mut RouteConfig, ppm: u32) -> Result<String, ControlError> {
    let name = r.name.clone();
    let canary = r.canary.as_mut().ok_or(ControlError::NoCanary(name))?;
    let old = canary.ppm;
    canary.ppm = ppm;
    Ok(format!(
        "route {}: canary percent {} -> {}",
        r.name,
        format_percent(old),
        format_percent(ppm)
    ))
}

pub(super) fn promote_route(r: &mut RouteConfig) -> Result<String, ControlError> {
    let name = r.name.clone();
    let canary = r.canary.take().ok_or(ControlError::NoCanary(name))?;
    let old = std::mem::replace(&mut r.stable.id, canary.deployment.id.clone());
    r.stable.endpoints = canary.deployment.endpoints;
    r.stable.variables.extend(canary.deployment.variables);
    Ok(format!(
        "route {}: promoted canary {} to stable (was {old})",
        r.name, r.stable.id
    ))
}

pub(super) fn rollback_route(r: &mut RouteConfig) -> Result<String, ControlError> {
    let name = r.name.clone();
    let canary = r.canary.as_mut().ok_or(ControlError::NoCanary(name))?;
    let old = canary.ppm;
    canary.ppm = 0;
    Ok(format!(
        "route {}: rolled back, canary percent {} -> 0 (deployment {} kept)",
        r.name,
        format_percent(old),
        canary.deployment.id
    ))
}

pub(super) fn check_var_name(key: &str) -> Result<(), ControlError> {
    if crate::config::template::is_var_name(key) {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "'{key}' is not a variable name (letters, digits, _)"
        )))
    }
}
