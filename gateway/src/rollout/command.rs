//! The `rollout ...` admin commands, parsed from the words after `rollout` (a pure
//! function, called by [`crate::admin::protocol::parse`]).

use super::plan::PlanArgs;

/// A parsed `rollout` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutCommand {
    /// `rollout start ROUTE [steps P,P,.. interval DUR judge sequential|fixed ...]`: without
    /// settings, the route's plan from the configuration file.
    Start {
        /// Route name.
        route: String,
        /// Settings given on the command line.
        args: Box<PlanArgs>,
    },
    /// `rollout pause ROUTE`
    Pause {
        /// Route name.
        route: String,
    },
    /// `rollout resume ROUTE`
    Resume {
        /// Route name.
        route: String,
    },
    /// `rollout abort ROUTE`
    Abort {
        /// Route name.
        route: String,
    },
}

impl RolloutCommand {
    /// The route it applies to.
    pub fn route(&self) -> &str {
        match self {
            RolloutCommand::Start { route, .. }
            | RolloutCommand::Pause { route }
            | RolloutCommand::Resume { route }
            | RolloutCommand::Abort { route } => route,
        }
    }
}

/// Usage shown for malformed `rollout` commands.
pub(crate) const USAGE: &str = "usage: rollout start ROUTE [steps P,P,.. interval DUR judge sequential|fixed ...] | rollout pause|resume|abort ROUTE";

/// Parses the words after `rollout`.
pub(crate) fn parse(words: &[&str]) -> Result<RolloutCommand, String> {
    let route = |r: &str| r.to_owned();
    Ok(match words {
        ["start", r, rest @ ..] => RolloutCommand::Start {
            route: route(r),
            args: Box::new(PlanArgs::parse(rest)?),
        },
        ["pause", r] => RolloutCommand::Pause { route: route(r) },
        ["resume", r] => RolloutCommand::Resume { route: route(r) },
        ["abort", r] => RolloutCommand::Abort { route: route(r) },
        _ => return Err(USAGE.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rollout_commands() {
        let c = parse(&[
            "start",
            "api",
            "steps",
            "5,25,50,100",
            "interval",
            "60s",
            "min-requests",
            "200",
        ])
        .unwrap();
        let RolloutCommand::Start { route, args } = c else {
            panic!("not a start")
        };
        assert_eq!(route, "api");
        assert_eq!(args.steps, Some(vec![50_000, 250_000, 500_000, 1_000_000]));
        assert_eq!(args.min_requests, Some(200));
        assert_eq!(parse(&["start", "api"]).unwrap().route(), "api");
        assert_eq!(
            parse(&["pause", "api"]).unwrap(),
            RolloutCommand::Pause {
                route: "api".into()
            }
        );
        assert_eq!(
            parse(&["resume", "api"]).unwrap(),
            RolloutCommand::Resume {
                route: "api".into()
            }
        );
        assert_eq!(
            parse(&["abort", "api"]).unwrap(),
            RolloutCommand::Abort {
                route: "api".into()
            }
        );
        for bad in [
            &[][..],
            &["pause"],
            &["pause", "a", "b"],
            &["start"],
            &["frob", "api"],
            &["start", "api", "steps", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
