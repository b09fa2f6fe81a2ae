//! Sticky and forced assignment through the real gateway, observed at the upstreams
//! (every answer names the upstream that gave it): a key always lands on the same variant
//! (the documented salted bucket), raising the share only adds keys to the canary and
//! lowering it only removes them, two gateways with the same config agree on every key,
//! and forcing goes header > cookie > sticky > random.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tests::{AdminConn, Client, ConfigFile, Expect, GatewayProc, TestUpstream, get_with};

/// Requests per pipelined write.
const PIPELINE: usize = 100;

/// The sticky bucket as the README documents it: FNV-1a-64 over salt ++ 0xFF ++ key, the
/// splitmix64 finalizer, then `(h * 1e6) >> 64`.
fn spec_bucket(salt: &str, key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.as_bytes().iter().chain(&[0xff]).chain(key.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((u128::from(h) * 1_000_000) >> 64) as u32
}

/// Upstreams and a gateway with sticky routes on a header (`/h`), a cookie (`/c`), the
/// client IP (`/i`), a custom salt and custom forcing names (`/x`), and random routes at
/// 0 % (`/r0`) and 100 % (`/r100`).
struct Fixture {
    _stable: TestUpstream,
    _canary: TestUpstream,
    file: ConfigFile,
}

impl Fixture {
    fn new() -> Self {
        let stable = TestUpstream::start("stable");
        let canary = TestUpstream::start("canary");
        let route = |name: &str, prefix: &str, extra: &str, percent: &str| {
            format!(
                "\n[[stage.route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\n{extra}\
                 stable = {{ id = \"v1\", endpoints = [\"{}\"] }}\n\
                 canary = {{ id = \"v2\", endpoints = [\"{}\"], percent = {percent} }}\n",
                stable.addr_str(),
                canary.addr_str()
            )
        };
        let sticky = |key: &str| format!("assignment = \"sticky\"\nsticky_key = \"{key}\"\n");
        let text = [
            "[server]\nworkers = 2\n\n[[stage]]\nname = \"prod\"\nlisten = \"127.0.0.1:0\"\n"
                .to_owned(),
            route("hdr", "/h", &sticky("header:x-user"), "37.5"),
            route("cookie", "/c", &sticky("cookie:uid"), "37.5"),
            route("ip", "/i", &sticky("ip"), "50"),
            route(
                "custom",
                "/x",
                &format!(
                    "{}sticky_salt = \"custom-salt\"\nforce_header = \"x-force\"\nforce_cookie = \"\"\n",
                    sticky("header:x-user")
                ),
                "50",
            ),
            route("r0", "/r0", "", "0"),
            route("r100", "/r100", "", "100"),
        ]
        .concat();
        Self {
            _stable: stable,
            _canary: canary,
            file: ConfigFile::new(&text),
        }
    }

    fn gateway(&self, extra: &str) -> GatewayProc {
        if !extra.is_empty() {
            let text = std::fs::read_to_string(self.file.path()).unwrap();
            self.file
                .write(&text.replacen("[server]\n", &format!("[server]\n{extra}"), 1));
        }
        let expect = if extra.contains("admin_socket") {
            Expect::stages(1).with_admin()
        } else {
            Expect::stages(1)
        };
        GatewayProc::start_config(self.file.path(), &expect, &[])
    }
}

/// Sends every request in `reqs` on one connection, `PIPELINE` per write, and returns
/// which upstream answered each.
fn answered_by(client: &mut Client, reqs: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::with_capacity(reqs.len());
    for batch in reqs.chunks(PIPELINE) {
        client.send(&batch.concat()).expect("send a batch");
        for _ in batch {
            let r = client.read_response(false).expect("read a response");
            let who = r.header("x-upstream").unwrap_or("?").to_owned();
            assert!(who == "stable" || who == "canary", "{}", r.describe());
            out.push(who);
        }
    }
    out
}

fn by_header(path: &str, key: &str) -> Vec<u8> {
    get_with(path, "canarygate.test", &format!("x-user: {key}\r\n"))
}

fn by_cookie(key: &str) -> Vec<u8> {
    get_with(
        "/c",
        "canarygate.test",
        &format!("Cookie: a=1; uid={key}; b=2\r\n"),
    )
}

/// Builds the request that carries a key.
type Build<'a> = &'a dyn Fn(&str) -> Vec<u8>;

/// The variant of each key (one request per key).
fn variants_of(addr: SocketAddr, keys: &[String], build: Build<'_>) -> Vec<String> {
    let reqs: Vec<Vec<u8>> = keys.iter().map(|k| build(k)).collect();
    answered_by(&mut Client::connect(addr).unwrap(), &reqs)
}

fn keys(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i:05}")).collect()
}

/// Loopback client addresses 127.0.0.10, 127.0.0.11, ...
fn client_ips(n: u8) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i)))
        .collect()
}

/// The variant `ip` gets on `/i`, after checking 100 requests over two connections agree.
fn ip_variant(addr: SocketAddr, ip: IpAddr) -> String {
    let reqs = vec![get_with("/i", "canarygate.test", ""); 50];
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        let mut c = Client::connect_from(addr, ip).expect("connect from another loopback IP");
        seen.extend(answered_by(&mut c, &reqs));
    }
    assert_eq!(seen.len(), 1, "client {ip}: 100 requests went to {seen:?}");
    seen.into_iter().next().unwrap_or_default()
}

#[test]
fn sticky_keys_always_land_on_the_same_variant() {
    let fx = Fixture::new();
    let gw = fx.gateway("");
    let mut client = Client::connect(gw.addr()).unwrap();
    let mut problems = Vec::new();
    let cases: [(&str, &str, u32, Build<'_>); 3] = [
        ("hdr", "hdr", 375_000, &|k| by_header("/h", k)),
        ("cookie", "cookie", 375_000, &by_cookie),
        ("custom", "custom-salt", 500_000, &|k| by_header("/x", k)),
    ];
    for (route, salt, ppm, build) in cases {
        let mut canary_keys = 0;
        for key in keys(100, route) {
            let got: BTreeSet<String> = answered_by(&mut client, &vec![build(&key); 100])
                .into_iter()
                .collect();
            let want = if spec_bucket(salt, &key) < ppm {
                "canary"
            } else {
                "stable"
            };
            if got.len() != 1 {
                problems.push(format!("{route} key {key}: 100 requests went to {got:?}"));
            } else if !got.contains(want) {
                problems.push(format!(
                    "{route} key {key}: always {got:?}, but its documented bucket {} \
                     (salt {salt:?}) at {ppm} ppm says {want}",
                    spec_bucket(salt, &key)
                ));
            }
            canary_keys += usize::from(want == "canary");
        }
        assert!(
            (10..90).contains(&canary_keys),
            "{route}: {canary_keys} canary keys"
        );
    }
    let ips = client_ips(40);
    let on_canary = ips
        .iter()
        .filter(|&&ip| ip_variant(gw.addr(), ip) == "canary")
        .count();
    assert!(
        (1..40).contains(&on_canary),
        "sticky ip at 50 %: {on_canary} of 40 client IPs on the canary"
    );
    problems.truncate(20);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A deterministic generator for the property test (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A share in 1..1,000,000 ppm.
    fn ppm(&mut self) -> u32 {
        1 + (self.next() % 999_999) as u32
    }
}

/// `ppm` as the admin socket's percent (up to 4 decimals).
fn percent(ppm: u32) -> String {
    format!("{}.{:04}", ppm / 10_000, ppm % 10_000)
}

#[test]
fn raising_the_share_only_adds_keys_and_lowering_only_removes_them() {
    let fx = Fixture::new();
    let sock = fx.file.sibling("admin.sock");
    let gw = fx.gateway(&format!("admin_socket = \"{}\"\n", sock.display()));
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let keys = keys(2000, "user");
    let seed = 0x5eed_0000_u64 + u64::from(std::process::id());
    let mut rng = Rng(seed);
    let mut up: Vec<u32> = (0..6).map(|_| rng.ppm()).collect();
    up.sort_unstable();
    up.insert(0, 0);
    up.push(1_000_000);
    let mut down: Vec<u32> = (0..5).map(|_| rng.ppm()).collect();
    down.sort_unstable_by(|a, b| b.cmp(a));
    down.insert(0, 1_000_000);
    down.push(0);
    eprintln!("monotonicity: seed {seed:#x}, up {up:?}, down {down:?}");

    let mut canary_at = |ppm: u32| -> BTreeSet<String> {
        admin.ok(&format!("set canary hdr percent {}", percent(ppm)));
        let got = variants_of(gw.addr(), &keys, &|k| by_header("/h", k));
        let set: BTreeSet<String> = keys
            .iter()
            .zip(got)
            .filter(|(_, v)| v == "canary")
            .map(|(k, _)| k.clone())
            .collect();
        let want = keys.iter().filter(|k| spec_bucket("hdr", k) < ppm).count();
        assert_eq!(
            set.len(),
            want,
            "at {ppm} ppm: {} canary keys, the documented bucket gives {want} (seed {seed:#x})",
            set.len()
        );
        set
    };
    for (sequence, raising) in [(&up, true), (&down, false)] {
        let mut prev: Option<(u32, BTreeSet<String>)> = None;
        for &ppm in sequence {
            let now = canary_at(ppm);
            if let Some((p, before)) = &prev {
                let (small, big) = if raising {
                    (before, &now)
                } else {
                    (&now, before)
                };
                let strays: Vec<_> = small.difference(big).take(5).collect();
                assert!(
                    strays.is_empty(),
                    "{p} -> {ppm} ppm: keys {strays:?} were canary at the lower share but \
                     not at the higher one (seed {seed:#x})"
                );
            }
            prev = Some((ppm, now));
        }
    }
}

#[test]
fn two_gateways_with_the_same_config_agree_on_every_key() {
    let fx = Fixture::new();
    let (a, b) = (fx.gateway(""), fx.gateway(""));
    let keys = keys(2000, "agree");
    for (what, build) in [
        ("header", &(|k: &str| by_header("/h", k)) as Build<'_>),
        ("cookie", &by_cookie),
    ] {
        let (va, vb) = (
            variants_of(a.addr(), &keys, build),
            variants_of(b.addr(), &keys, build),
        );
        let differ: Vec<_> = keys
            .iter()
            .zip(va.iter().zip(&vb))
            .filter(|(_, (x, y))| x != y)
            .take(5)
            .collect();
        assert!(
            differ.is_empty(),
            "{what}: the gateways disagree on {differ:?}"
        );
        let canary = va.iter().filter(|v| *v == "canary").count();
        assert!(
            (500..1000).contains(&canary),
            "{what}: {canary} of 2000 canary at 37.5 %"
        );
    }
    let differ: Vec<_> = client_ips(20)
        .into_iter()
        .map(|ip| (ip, ip_variant(a.addr(), ip), ip_variant(b.addr(), ip)))
        .filter(|(_, x, y)| x != y)
        .collect();
    assert!(differ.is_empty(), "ip: the gateways disagree on {differ:?}");
}

#[test]
fn forcing_precedence_is_header_then_cookie_then_sticky_then_random() {
    let fx = Fixture::new();
    let gw = fx.gateway("");
    let mut client = Client::connect(gw.addr()).unwrap();
    // A key the sticky choice puts on each side, per route, as the gateway itself says.
    let mut pick = |path: &str, want: &str| -> String {
        let ks = keys(200, "probe");
        let reqs: Vec<Vec<u8>> = ks.iter().map(|k| by_header(path, k)).collect();
        let got = answered_by(&mut client, &reqs);
        ks.into_iter()
            .zip(got)
            .find_map(|(k, v)| (v == want).then_some(k))
            .unwrap_or_else(|| panic!("no key on {want} among 200 on {path}"))
    };
    let (hs, hc) = (pick("/h", "stable"), pick("/h", "canary"));
    let (xs, xc) = (pick("/x", "stable"), pick("/x", "canary"));
    let h = |k: &str, extra: &str| format!("x-user: {k}\r\n{extra}");
    // (path, header lines, expected upstream)
    let cases: Vec<(&str, String, &str)> = vec![
        ("/h", h(&hs, ""), "stable"),
        ("/h", h(&hc, ""), "canary"),
        ("/h", h(&hs, "x-canary: always\r\n"), "canary"),
        ("/h", h(&hc, "x-canary: never\r\n"), "stable"),
        ("/h", h(&hs, "Cookie: canary=always\r\n"), "canary"),
        ("/h", h(&hc, "Cookie: x=1; canary=never\r\n"), "stable"),
        (
            "/h",
            h(&hc, "x-canary: never\r\nCookie: canary=always\r\n"),
            "stable",
        ),
        (
            "/h",
            h(&hs, "x-canary: always\r\nCookie: canary=never\r\n"),
            "canary",
        ),
        ("/h", h(&hs, "x-canary: maybe\r\n"), "stable"),
        ("/h", h(&hc, "Cookie: canary=maybe\r\n"), "canary"),
        (
            "/h",
            h(&hs, "x-canary: maybe\r\nCookie: canary=always\r\n"),
            "canary",
        ),
        ("/r0", String::new(), "stable"),
        ("/r0", "x-canary: always\r\n".into(), "canary"),
        ("/r0", "Cookie: canary=always\r\n".into(), "canary"),
        (
            "/r0",
            "x-canary: never\r\nCookie: canary=always\r\n".into(),
            "stable",
        ),
        ("/r100", String::new(), "canary"),
        ("/r100", "x-canary: never\r\n".into(), "stable"),
        ("/r100", "Cookie: canary=never\r\n".into(), "stable"),
        (
            "/r100",
            "x-canary: always\r\nCookie: canary=never\r\n".into(),
            "canary",
        ),
        // Custom names: x-force counts, the default header does not, the cookie is off.
        ("/x", h(&xs, "x-force: always\r\n"), "canary"),
        ("/x", h(&xc, "x-force: never\r\n"), "stable"),
        ("/x", h(&xs, "x-canary: always\r\n"), "stable"),
        ("/x", h(&xs, "Cookie: canary=always\r\n"), "stable"),
        (
            "/x",
            h(&xc, "x-canary: never\r\nCookie: canary=never\r\n"),
            "canary",
        ),
    ];
    let mut problems = Vec::new();
    for (path, extra, want) in &cases {
        let reqs = vec![get_with(path, "canarygate.test", extra); 20];
        let got: BTreeSet<String> = answered_by(&mut client, &reqs).into_iter().collect();
        if got.len() != 1 || !got.contains(*want) {
            problems.push(format!("{path} with {extra:?}: want {want}, got {got:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
