//! `show tls [json]` and the certificate series of `/metrics`, from one report of the
//! loaded listener certificates ([`crate::control::tls`]): per certificate its stage,
//! the names it is chosen for, subject, issuer, serial, validity and key type, and the
//! seconds left before it expires, so alerts can fire in time. Changes nothing.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::control::Control;
use crate::dataplane::io::clock::{now_us, utc};
use crate::metrics::prometheus::{esc, header};

fn date(secs: i64) -> String {
    utc(secs)
}

fn now() -> i64 {
    (now_us() / 1_000_000).cast_signed()
}

/// One JSON item per listener certificate.
pub(crate) fn report(control: &Control) -> (Vec<Value>, u64) {
    let (certs, loaded_at) = control.tls_certs();
    let now = now();
    let items = certs
        .into_iter()
        .map(|(stage, c, min_version)| {
            json!({
                "stage": stage,
                "names": c.names,
                "default": c.default,
                "cert_file": c.cert_file,
                "subject": c.subject,
                "issuer": c.issuer,
                "serial": c.serial,
                "key_type": c.key_type,
                "chain_len": c.chain_len,
                "not_before": date(c.not_before),
                "not_after": date(c.not_after),
                "expires_in_s": c.not_after - now,
                "min_version": min_version,
            })
        })
        .collect();
    (items, loaded_at)
}

/// `show tls [json]`.
pub(crate) fn show(control: &Control, json: bool) -> String {
    let (items, loaded_at) = report(control);
    if json {
        return json!({ "certificates": items, "loaded_at": date(loaded_at.cast_signed()) })
            .to_string();
    }
    if items.is_empty() {
        return "no TLS listener".into();
    }
    let mut out = format!("certificates loaded at {}", date(loaded_at.cast_signed()));
    for i in &items {
        let days = i["expires_in_s"].as_i64().unwrap_or(0) as f64 / 86_400.0;
        let names: Vec<&str> = i["names"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let _ = write!(
            out,
            "\nstage {} {}{}\n  subject {}\n  issuer {}\n  serial {}  {} key, chain of {}, TLS {}+\n  valid {} .. {} ({})\n  file {}",
            i["stage"].as_str().unwrap_or(""),
            names.join(","),
            if i["default"] == true {
                " (default)"
            } else {
                ""
            },
            i["subject"].as_str().unwrap_or(""),
            i["issuer"].as_str().unwrap_or(""),
            i["serial"].as_str().unwrap_or(""),
            i["key_type"].as_str().unwrap_or(""),
            i["chain_len"],
            i["min_version"].as_str().unwrap_or(""),
            i["not_before"].as_str().unwrap_or(""),
            i["not_after"].as_str().unwrap_or(""),
            if days < 0.0 {
                format!("EXPIRED {:.1} days ago", -days)
            } else {
                format!("expires in {days:.1} days")
            },
            i["cert_file"].as_str().unwrap_or(""),
        );
    }
    out
}

/// Appends `canarygate_tls_certificate_expiry_seconds`.
pub(crate) fn render(out: &mut String, control: &Control) {
    let (items, _) = report(control);
    if items.is_empty() {
        return;
    }
    header(
        out,
        "canarygate_tls_certificate_expiry_seconds",
        "Seconds until the listener certificate expires (negative once expired).",
        "gauge",
    );
    for i in &items {
        let name = i["names"][0].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "canarygate_tls_certificate_expiry_seconds{{stage=\"{}\",name=\"{}\",serial=\"{}\"}} {}",
            esc(i["stage"].as_str().unwrap_or("")),
            esc(name),
            esc(i["serial"].as_str().unwrap_or("")),
            i["expires_in_s"].as_i64().unwrap_or(0)
        );
    }
}
