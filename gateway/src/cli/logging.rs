//! The process's own log lines on stderr (not the access log), set up once by the binary
//! after the flags and the configuration file are read, so `--log-format` and
//! `[server] log_format` both apply from the first line: `text` is env_logger's format,
//! `json` is one object per line (`ts`, `level`, `target`, `msg`) that journald, Loki or
//! `jq` read without a parser of their own. `RUST_LOG` filters both.

use std::io::Write as _;
use std::sync::OnceLock;

use crate::config::LogFormat;

/// The format the logger was started with (unset before [`init`]).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Starts the logger writing `format` to stderr, `info` and above unless `RUST_LOG` says
/// otherwise. Only the first call has an effect.
pub(crate) fn init(format: LogFormat) {
    if FORMAT.set(format).is_err() {
        return;
    }
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.target(env_logger::Target::Stderr);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let ts = buf.timestamp_millis().to_string();
            let line = json_line(
                &ts,
                record.level(),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        });
    }
    // Fails only when a logger is already set (a program embedding the gateway).
    let _ = builder.try_init();
}

/// Whether log lines are JSON, so a fatal error is reported as one too.
pub(crate) fn is_json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// One JSON log line (without the newline): every value a JSON string, with `"`, `\`
/// and control characters escaped, so a multi-line message stays on one line.
pub(crate) fn json_line(ts: &str, level: log::Level, target: &str, msg: &str) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    format!(
        "{{\"ts\":{},\"level\":{},\"target\":{},\"msg\":{}}}",
        s(ts),
        s(level.as_str()),
        s(target),
        s(msg)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_with_the_four_fields() {
        let msg = "reload: route \"api\" updated\nsecond line\ttab \\ back \u{1} ctl é";
        let line = json_line(
            "2026-01-02T03:04:05.678Z",
            log::Level::Warn,
            "gateway::admin",
            msg,
        );
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("{\"ts\":\"2026-01-02T03:04:05.678Z\","),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 4, "{line}");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "gateway::admin");
        assert_eq!(v["msg"], msg);
        assert!(line.contains("\\u0001") && line.contains("\\n"), "{line}");
    }
}
