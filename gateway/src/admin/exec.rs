//! Runs admin commands against the routing state ([`Control`](crate::control::Control))
//! and the rollout controller ([`Rollouts`], which owns the rollouts and is the way in for
//! reloads), and formats the answers: human-readable text by default, JSON on request
//! (every `show ...` renderer lives in [`super::show`]). Mutating commands are
//! audit-logged with who ran them.

use std::path::Path;

use super::protocol::{Command, HELP, parse};
use crate::rollout::controller::Rollouts;

/// An answer: its text and whether the command succeeded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// True unless the command failed.
    pub ok: bool,
    /// Lines without the terminating empty line; errors start with `error: `.
    pub text: String,
}

impl Reply {
    fn ok(text: String) -> Reply {
        Reply { ok: true, text }
    }

    fn err(text: impl std::fmt::Display) -> Reply {
        Reply {
            ok: false,
            text: format!("error: {text}"),
        }
    }
}

/// Parses and runs `line` for `who` (for the audit log).
pub(crate) fn execute(rollouts: &Rollouts, line: &str, who: &str) -> Reply {
    let control = rollouts.control();
    let request = match parse(line) {
        Ok(r) => r,
        Err(e) => return Reply::err(e),
    };
    // A trip the workers made since the controller's last tick is part of the state
    // this command reads or changes.
    rollouts.record_kill_switch_trips();
    let expect = request.expect;
    let mutates = request.command.mutates();
    let reply = match request.command {
        Command::Help => Reply::ok(HELP.to_owned()),
        Command::ShowVersion => Reply::ok(format!("version {}", control.version())),
        Command::ShowCanary { route, json } => {
            shown(super::show::canary::show(control, route.as_deref(), json))
        }
        Command::ShowStats { route, json } => {
            shown(super::show::stats::show(control, route.as_deref(), json))
        }
        Command::SetPercent { ref route, ppm } => result(control.set_percent(expect, route, ppm)),
        Command::SetVar {
            ref route,
            ref key,
            ref value,
        } => result(control.set_var(expect, route, key, value)),
        Command::DelVar { ref route, ref key } => result(control.del_var(expect, route, key)),
        Command::SetDeployment {
            ref route,
            ref id,
            ref endpoints,
        } => result(control.set_deployment(expect, route, id, endpoints)),
        Command::Promote { ref route } => result(control.promote(expect, route)),
        Command::Rollback { ref route } => result(control.rollback(expect, route)),
        Command::Reload => reload(rollouts, expect),
        Command::ReloadTls => result(control.reload_tls(expect)),
        Command::ShowTls { json } => Reply::ok(super::show::tls::show(control, json)),
        Command::ShowFleet { json } => shown(super::show::fleet::show(control, json)),
        Command::ShowFleetStats { route, json } => {
            shown(super::show::fleet::stats(rollouts, route.as_deref(), json))
        }
        Command::Rollout(ref cmd) => result(rollouts.rollout(expect, cmd, who)),
        Command::ShowRollout { route, json } => {
            shown(super::show::rollout::show(rollouts, route.as_deref(), json))
        }
        Command::ShowEndpoints { route, json } => shown(super::show::endpoints::show(
            control,
            route.as_deref(),
            json,
        )),
        Command::SetEndpoint {
            ref route,
            addr,
            state,
        } => match control.check_version(expect) {
            Err(e) => Reply::err(e),
            Ok(()) => shown(control.health().set_admin(route, addr, state)),
        },
    };
    if mutates {
        let outcome = if reply.ok { "ok" } else { "refused" };
        log::info!(target: "canarygate::audit", "{who}: '{}' {outcome}: {}", line.trim(), reply.text.replace('\n', "; "));
    }
    reply
}

fn shown(r: Result<String, String>) -> Reply {
    match r {
        Ok(text) => Reply::ok(text),
        Err(e) => Reply::err(e),
    }
}

fn result(r: Result<String, crate::control::ControlError>) -> Reply {
    match r {
        Ok(text) => Reply::ok(text),
        Err(e) => Reply::err(e),
    }
}

/// Re-reads the configuration file the gateway started with and applies the difference
/// through the rollout controller (which keeps rollouts' shares).
pub(crate) fn reload(rollouts: &Rollouts, expect: Option<u64>) -> Reply {
    let control = rollouts.control();
    if control.store().is_some() {
        // The file's stages are not the fleet's: re-reading them on every member's
        // SIGHUP would undo what operators changed. Certificates are still local files.
        return match control.reload_tls(expect) {
            Ok(tls) => Reply::ok(format!(
                "fleet mode: routes come from etcd (`canarygate fleet import FILE` changes them); {tls}"
            )),
            Err(e) => Reply::err(e),
        };
    }
    let current = control.config();
    let Some(source) = current.server.source.as_deref() else {
        return Reply::err("reload: the gateway was not started with --config");
    };
    if let Some(expected) = expect
        && expected != control.version()
    {
        return Reply::err(format!(
            "version mismatch: expected {expected}, current is {}",
            control.version()
        ));
    }
    match crate::config::file::load(Path::new(source)) {
        Err(e) => Reply::err(format!("reload: {e}")),
        Ok(new) => result(rollouts.reload(&new).map(|lines| lines.join("\n"))),
    }
}
