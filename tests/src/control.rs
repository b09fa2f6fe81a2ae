//! Control-plane helpers for end-to-end tests: configuration files the gateway can re-read
//! mid-test, the admin socket spoken raw over a `UnixStream` and through
//! `canarygate ctl`, and a real Prometheus text parser (Python's `prometheus_client`).
//!
//! Every socket read has a timeout and every child process is bounded in time, so a
//! gateway that stops answering fails a test instead of hanging it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{CliOutput, TempDir, run_cli};

/// Read timeout on admin connections: a reload reads a file, everything else is instant.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A TOML configuration file in its own temporary directory, rewritten atomically (write
/// then rename) so a reload never reads half a file.
#[derive(Debug)]
pub struct ConfigFile {
    dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` to a new file `canarygate.toml` in a fresh directory.
    pub fn new(text: &str) -> Self {
        let dir = TempDir::new("cfg");
        let path = dir.path().join("canarygate.toml");
        let file = Self { dir, path };
        file.write(text);
        file
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding it (a place for sockets and logs that go with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path named `name` inside [`ConfigFile::dir`].
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the contents with `text`.
    pub fn write(&self, text: &str) {
        let tmp = self.path.with_extension("toml.tmp");
        fs::write(&tmp, text).expect("write config file");
        fs::rename(&tmp, &self.path).expect("rename config file into place");
    }
}

/// The answer to one admin command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// False when the answer is an error (`error: ...`, or a failed `ctl`).
    pub ok: bool,
    /// The reply lines, without the terminating empty line.
    pub text: String,
}

impl Reply {
    /// The text parsed as JSON; panics with the text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", self.text))
    }
}

/// One connection to the admin socket: a command per line, the reply lines up to an empty
/// line.
#[derive(Debug)]
pub struct AdminConn {
    reader: BufReader<UnixStream>,
}

impl AdminConn {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
        stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `line` (a newline is added) and reads the reply.
    pub fn send(&mut self, line: &str) -> io::Result<Reply> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.reader.get_mut().write_all(&bytes)?;
        self.read_reply()
    }

    /// Like [`AdminConn::send`], panicking on a transport error.
    pub fn cmd(&mut self, line: &str) -> Reply {
        let shown: String = line.chars().take(80).collect();
        self.send(line)
            .unwrap_or_else(|e| panic!("admin command {shown:?}: {e}"))
    }

    /// Like [`AdminConn::cmd`], panicking unless the command succeeded.
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.cmd(line);
        assert!(r.ok, "admin command {line:?} failed: {}", r.text);
        r.text
    }

    /// Reads one reply: lines up to the empty line that ends it.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("admin socket closed in the middle of a reply: {text:?}"),
                ));
            }
            if line == "\n" {
                break;
            }
            text.push_str(&line);
        }
        let text = text.trim_end_matches('\n').to_owned();
        Ok(Reply {
            ok: !text.starts_with("error: "),
            text,
        })
    }

    /// Whether the gateway closed the connection: a read returns end of stream (or a
    /// reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let _ = self.reader.get_ref().set_read_timeout(Some(within));
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    /// `show version` as a number.
    pub fn version(&mut self) -> u64 {
        let text = self.ok("show version");
        text.strip_prefix("version ")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("`show version` answered {text:?}"))
    }
}

/// Runs `canarygate ctl --socket SOCKET WORDS..` (bounded to 20 s).
pub fn ctl(socket: &Path, words: &[&str]) -> CliOutput {
    let socket = socket.to_string_lossy();
    let mut args = vec!["ctl", "--socket", &socket];
    args.extend_from_slice(words);
    run_cli(&args, Duration::from_secs(20))
}

/// One sample of a parsed Prometheus exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSample {
    /// Sample name (`canarygate_requests_total`, `..._bucket`, ...).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed Prometheus exposition: metric families (name -> type) and their samples.
#[derive(Clone, Debug, Default)]
pub struct PromText {
    /// Family name (as the parser reports it, `_total` removed for counters) -> type.
    pub families: BTreeMap<String, String>,
    /// Every sample in order.
    pub samples: Vec<PromSample>,
}

impl PromText {
    /// The samples named `name` whose labels include every `(key, value)` of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a PromSample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample `name` with exactly these labels (panics otherwise).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self
            .find(name, labels)
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "want exactly one sample {name}{labels:?}, found {found:?}"
        );
        found[0].value
    }

    /// [`PromText::value`] of a counter or count, which must be a whole number.
    pub fn int(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self.value(name, labels);
        assert!(
            v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53),
            "{name}{labels:?} = {v} is not a whole number"
        );
        v as u64
    }
}

/// The parser run by [`parse_prometheus`]: reads the exposition on stdin, prints one JSON
/// object per family, and exits non-zero (with the traceback) on any parse error.
const PARSER: &str = r"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
for fam in text_string_to_metric_families(text):
    print(json.dumps({'name': fam.name, 'type': fam.type,
        'samples': [[s.name, s.labels, s.value] for s in fam.samples]}))
";

/// Makes sure Python's `prometheus_client` can be imported, installing it with pip once
/// per test process if it is missing.
fn ensure_prometheus_client() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let import = || {
                Command::new("python3")
                    .args(["-c", "import prometheus_client.parser"])
                    .stdin(Stdio::null())
                    .output()
            };
            match import() {
                Ok(o) if o.status.success() => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("cannot run python3: {e}")),
            }
            let pip = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "prometheus-client"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run pip: {e}"))?;
            match import() {
                Ok(o) if o.status.success() => Ok(()),
                _ => Err(format!(
                    "prometheus_client is not importable and `pip install prometheus-client` \
                     did not fix it:\n{}",
                    String::from_utf8_lossy(&pip.stderr)
                )),
            }
        })
        .clone()
}

/// Parses `text` with Prometheus's Python client parser (`prometheus_client.parser`);
/// any parse error is an `Err` with the parser's message.
pub fn parse_prometheus(text: &str) -> Result<PromText, String> {
    ensure_prometheus_client()?;
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("python3: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "prometheus_client rejected the exposition ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut parsed = PromText::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fam: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("parser output {line:?}: {e}"))?;
        let name = fam["name"].as_str().unwrap_or_default().to_owned();
        let kind = fam["type"].as_str().unwrap_or_default().to_owned();
        parsed.families.insert(name, kind);
        for s in fam["samples"].as_array().into_iter().flatten() {
            let labels = s[1]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            parsed.samples.push(PromSample {
                name: s[0].as_str().unwrap_or_default().to_owned(),
                labels,
                value: s[2].as_f64().unwrap_or(f64::NAN),
            });
        }
    }
    Ok(parsed)
}
