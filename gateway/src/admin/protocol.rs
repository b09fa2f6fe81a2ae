//! The admin protocol, in the spirit of HAProxy's runtime API: one command per line,
//! words separated by spaces, the answer in lines followed by one empty line. Parsing is a
//! pure function so every command and error can be tested without a socket.

use std::net::SocketAddr;

use crate::config::value::{parse_addr, parse_percent};
use crate::control::health::Admin;

/// Longest accepted command line, in bytes.
pub(crate) const MAX_LINE: usize = 4096;

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`
    Help,
    /// `show version`
    ShowVersion,
    /// `show canary [ROUTE] [json]`
    ShowCanary { route: Option<String>, json: bool },
    /// `show stats [ROUTE] [json]`
    ShowStats { route: Option<String>, json: bool },
    /// `set canary ROUTE percent P`
    SetPercent { route: String, ppm: u32 },
    /// `set canary ROUTE var KEY VALUE...`
    SetVar {
        route: String,
        key: String,
        value: String,
    },
    /// `del canary ROUTE var KEY`
    DelVar { route: String, key: String },
    /// `set canary ROUTE deployment ID ADDR[,ADDR..]`
    SetDeployment {
        route: String,
        id: String,
        endpoints: Vec<SocketAddr>,
    },
    /// `promote ROUTE`
    Promote { route: String },
    /// `rollback ROUTE`
    Rollback { route: String },
    /// `reload`
    Reload,
    /// `reload tls`
    ReloadTls,
    /// `show tls [json]`
    ShowTls { json: bool },
    /// `show fleet [json]`
    ShowFleet { json: bool },
    /// `show fleet stats [ROUTE] [json]`
    ShowFleetStats { route: Option<String>, json: bool },
    /// `rollout start|pause|resume|abort ROUTE ...`
    Rollout(crate::rollout::RolloutCommand),
    /// `show rollout [ROUTE] [json]`
    ShowRollout { route: Option<String>, json: bool },
    /// `show endpoints [ROUTE] [json]`
    ShowEndpoints { route: Option<String>, json: bool },
    /// `set endpoint ROUTE ADDR drain|maint|ready`
    SetEndpoint {
        route: String,
        addr: SocketAddr,
        state: Admin,
    },
}

impl Command {
    /// True for commands that change the configuration (audit-logged, accept `expect`).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Command::Help
                | Command::ShowVersion
                | Command::ShowCanary { .. }
                | Command::ShowStats { .. }
                | Command::ShowRollout { .. }
                | Command::ShowEndpoints { .. }
                | Command::ShowTls { .. }
                | Command::ShowFleet { .. }
                | Command::ShowFleetStats { .. }
        )
    }
}

/// A command with its optional compare-and-set version (`expect N <command>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Version the configuration must be at for the command to apply.
    pub expect: Option<u64>,
    /// The command.
    pub command: Command,
}

/// The usage text `help` prints.
pub(crate) const HELP: &str = "\
help                                           this text
show version                                   configuration version
show canary [ROUTE] [json]                     routes, deployments, shares, variables
show stats [ROUTE] [json]                      per-route, per-variant figures
set canary ROUTE percent P                     canary share, 0..100 with up to 4 decimals
set canary ROUTE var KEY VALUE                 set a canary stage-variable override
del canary ROUTE var KEY                       remove a canary stage-variable override
set canary ROUTE deployment ID ADDR[,ADDR..]   create or replace the canary deployment
promote ROUTE                                  canary becomes stable; canary removed
rollback ROUTE                                 canary share to 0 at once; canary kept
reload                                         re-read the configuration file (also SIGHUP)
reload tls                                     re-read the certificate, key and CA files
                                               (SIGHUP does this without a config file)
show tls [json]                                listener certificates: names, issuer,
                                               serial, expiry
show fleet [json]                              fleet mode: etcd, members, versions,
                                               heartbeats, leader, refused changes
show fleet stats [ROUTE] [json]                fleet mode: every member's figures summed
                                               (what the leader judges), who contributed
rollout start ROUTE [steps P,P,.. interval DUR judge sequential|fixed ...]
                                               step-wise rollout, judged continuously
rollout pause|resume|abort ROUTE               hold, continue, or stop (canary to 0)
show rollout [ROUTE] [json]                    rollout progress and every verdict
show endpoints [ROUTE] [json]                  endpoint health: state, checks, ejections
set endpoint ROUTE ADDR drain|maint|ready      take an endpoint out (drain: in-flight
                                               requests finish) or put it back
takeover, takeover done                        sent by `canarygate run --takeover`: hand
                                               the listening sockets over, then drain
expect VERSION <command>                       apply only if the version is still VERSION";

/// Parses one command line.
pub fn parse(line: &str) -> Result<Request, String> {
    if line.len() > MAX_LINE {
        return Err(format!("command longer than {MAX_LINE} bytes"));
    }
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let (expect, words) = match words.as_slice() {
        ["expect", v, rest @ ..] => {
            let v = v
                .parse::<u64>()
                .map_err(|_| format!("expect: '{v}' is not a version number"))?;
            if rest.is_empty() {
                return Err("expect: a command must follow the version".into());
            }
            (Some(v), rest.to_vec())
        }
        _ => (None, words),
    };
    let route = |r: &str| r.to_owned();
    let command = match words.as_slice() {
        [] => return Err("empty command (try: help)".into()),
        ["help"] => Command::Help,
        ["show", "version"] => Command::ShowVersion,
        ["show", "rollout", rest @ ..] => {
            let (json, rest) = match rest {
                [r @ .., "json"] => (true, r),
                r => (false, r),
            };
            match rest {
                [] => Command::ShowRollout { route: None, json },
                [r] => Command::ShowRollout { route: Some(route(r)), json },
                _ => return Err("usage: show rollout [ROUTE] [json]".into()),
            }
        }
        ["rollout", rest @ ..] => Command::Rollout(crate::rollout::command::parse(rest)?),
        ["show", "canary" | "stats" | "endpoints", rest @ ..] => {
            let (json, rest) = match rest {
                [r @ .., "json"] => (true, r),
                r => (false, r),
            };
            let route = match rest {
                [] => None,
                [r] => Some(route(r)),
                _ => return Err(format!("usage: show {} [ROUTE] [json]", words[1])),
            };
            match words[1] {
                "canary" => Command::ShowCanary { route, json },
                "stats" => Command::ShowStats { route, json },
                _ => Command::ShowEndpoints { route, json },
            }
        }
        ["set", "canary", r, "percent", p] => Command::SetPercent { route: route(r), ppm: parse_percent(p).map_err(|e| format!("percent: {e}"))? },
        ["set", "canary", r, "var", k, v @ ..] if !v.is_empty() => {
            Command::SetVar { route: route(r), key: (*k).to_owned(), value: v.join(" ") }
        }
        ["del", "canary", r, "var", k] => Command::DelVar { route: route(r), key: (*k).to_owned() },
        ["set", "canary", r, "deployment", id, list] => {
            let endpoints = list
                .split(',')
                .map(|a| parse_addr(a).map_err(|e| format!("deployment endpoints: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Command::SetDeployment { route: route(r), id: (*id).to_owned(), endpoints }
        }
        ["set", "endpoint", r, a, state] => Command::SetEndpoint {
            route: route(r),
            addr: parse_addr(a).map_err(|e| format!("set endpoint: {e}"))?,
            state: Admin::parse(state).ok_or_else(|| format!("set endpoint: '{state}' is not drain, maint or ready"))?,
        },
        ["set", "endpoint", ..] => return Err("usage: set endpoint ROUTE ADDR drain|maint|ready".into()),
        ["promote", r] => Command::Promote { route: route(r) },
        ["rollback", r] => Command::Rollback { route: route(r) },
        ["reload"] => Command::Reload,
        ["reload", "tls"] => Command::ReloadTls,
        ["show", "tls"] => Command::ShowTls { json: false },
        ["show", "tls", "json"] => Command::ShowTls { json: true },
        ["show", "fleet"] => Command::ShowFleet { json: false },
        ["show", "fleet", "json"] => Command::ShowFleet { json: true },
        ["show", "fleet", "stats", rest @ ..] => {
            let (json, rest) = match rest {
                [r @ .., "json"] => (true, r),
                r => (false, r),
            };
            match rest {
                [] => Command::ShowFleetStats { route: None, json },
                [r] => Command::ShowFleetStats { route: Some(route(r)), json },
                _ => return Err("usage: show fleet stats [ROUTE] [json]".into()),
            }
        }
        ["set" | "del", "canary", ..] => {
            return Err("usage: set canary ROUTE percent P | var KEY VALUE | deployment ID ADDR[,ADDR..]; del canary ROUTE var KEY".into());
        }
        ["show", ..] => return Err("usage: show version | show canary [ROUTE] [json] | show stats [ROUTE] [json] | show rollout [ROUTE] [json] | show endpoints [ROUTE] [json] | show tls [json] | show fleet [json] | show fleet stats [ROUTE] [json]".into()),
        ["promote" | "rollback", ..] => return Err(format!("usage: {} ROUTE", words[0])),
        [other, ..] => return Err(format!("unknown command '{}' (try: help)", other.chars().take(64).collect::<String>())),
    };
    if expect.is_some() && !command.mutates() {
        return Err("expect only applies to commands that change the configuration".into());
    }
    Ok(Request { expect, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("help").unwrap().command, Command::Help);
        assert_eq!(parse("reload tls").unwrap().command, Command::ReloadTls);
        assert_eq!(
            parse("show tls json").unwrap().command,
            Command::ShowTls { json: true }
        );
        assert_eq!(
            parse("show tls").unwrap().command,
            Command::ShowTls { json: false }
        );
        assert!(parse("expect 3 reload tls").is_ok());
        assert!(parse("expect 3 show tls").is_err());
        assert_eq!(
            parse("show canary").unwrap().command,
            Command::ShowCanary {
                route: None,
                json: false
            }
        );
        assert_eq!(
            parse("show canary api json").unwrap().command,
            Command::ShowCanary {
                route: Some("api".into()),
                json: true
            }
        );
        assert_eq!(
            parse("show fleet stats api json").unwrap().command,
            Command::ShowFleetStats {
                route: Some("api".into()),
                json: true
            }
        );
        assert_eq!(
            parse("show stats json").unwrap().command,
            Command::ShowStats {
                route: None,
                json: true
            }
        );
        assert_eq!(
            parse("set canary api percent 12.25").unwrap().command,
            Command::SetPercent {
                route: "api".into(),
                ppm: 122_500
            }
        );
        assert_eq!(
            parse("set canary api var greeting hello world")
                .unwrap()
                .command,
            Command::SetVar {
                route: "api".into(),
                key: "greeting".into(),
                value: "hello world".into()
            }
        );
        assert_eq!(
            parse("del canary api var k").unwrap().command,
            Command::DelVar {
                route: "api".into(),
                key: "k".into()
            }
        );
        assert_eq!(
            parse("set canary api deployment v3 127.0.0.1:1,127.0.0.1:2")
                .unwrap()
                .command,
            Command::SetDeployment {
                route: "api".into(),
                id: "v3".into(),
                endpoints: vec![
                    "127.0.0.1:1".parse().unwrap(),
                    "127.0.0.1:2".parse().unwrap()
                ]
            }
        );
        assert_eq!(
            parse("promote api").unwrap().command,
            Command::Promote {
                route: "api".into()
            }
        );
        assert_eq!(
            parse("  rollback   api ").unwrap().command,
            Command::Rollback {
                route: "api".into()
            }
        );
        assert_eq!(
            parse("show endpoints api json").unwrap().command,
            Command::ShowEndpoints {
                route: Some("api".into()),
                json: true
            }
        );
        assert_eq!(
            parse("set endpoint api 127.0.0.1:9001 drain")
                .unwrap()
                .command,
            Command::SetEndpoint {
                route: "api".into(),
                addr: "127.0.0.1:9001".parse().unwrap(),
                state: Admin::Drain
            }
        );
        let r = parse("expect 7 set canary api percent 1").unwrap();
        assert_eq!(r.expect, Some(7));
    }

    #[test]
    fn rejects_bad_commands_with_one_line() {
        for bad in [
            "",
            "frobnicate",
            "set canary api percent 101",
            "set canary api percent",
            "set canary api deployment v3 nowhere",
            "show canary a b c",
            "expect x promote api",
            "expect 3",
            "expect 3 show canary",
            "promote",
            "set endpoint api 127.0.0.1:1 sleep",
            "set endpoint api nowhere drain",
            "set endpoint api",
            &"x".repeat(MAX_LINE + 1),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad}: {e}");
        }
    }
}
