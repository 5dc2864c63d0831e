//! Helpers for the observability e2e tests (`e2e_observe_*.rs`): frames for each drop reason
//! sent raw from the client namespace, a real Prometheus server run inside a namespace (a Drop
//! guard stops it and removes its data), HTTP GETs inside a namespace, and a syslog socket the
//! test owns.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use fw_common::frame::PacketSpec;
use serde_json::Value;

use crate::{CMD_TIMEOUT, NetNs, Pair, Proc};

/// `spec` as a frame from the client's MAC to the server's, ready for a raw send.
pub fn frame(pair: &Pair, spec: &PacketSpec) -> Vec<u8> {
    let mut f = spec.build();
    f[..6].copy_from_slice(&pair.server_mac());
    f[6..12].copy_from_slice(&pair.client_mac());
    f
}

/// Send `frames` from the client end of the veth, `times` each.
pub fn send(pair: &Pair, frames: &[Vec<u8>], times: usize) {
    let link = pair.client.raw_link(Pair::CLIENT_IF);
    for _ in 0..times {
        for f in frames {
            link.send(f);
        }
    }
}

/// A unique port per process and call, for servers inside the test's own namespace.
pub fn port(base: u16) -> u16 {
    base + (std::process::id() % 500) as u16
}

/// `curl -s URL` inside `ns` (bounded); the body, or None.
pub fn http_get(ns: &NetNs, url: &str) -> Option<String> {
    let out = ns.run("curl", &["-sf", "--max-time", "5", url], CMD_TIMEOUT);
    out.success().then_some(out.stdout)
}

/// Poll `url` inside `ns` until it answers (bounded).
pub fn wait_http(ns: &NetNs, url: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(ns, url).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A Prometheus server inside a namespace, scraping one target every second. Stopped and its
/// data removed on drop.
pub struct Prometheus {
    proc: Option<Proc>,
    dir: PathBuf,
    pub web: String,
}

impl Prometheus {
    pub fn start(ns: &NetNs, target: &str, web_port: u16) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("fw-prom-{}-{}", std::process::id(), web_port));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: fw\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus config");
        let web = format!("127.0.0.1:{web_port}");
        let cfg = dir.join("prometheus.yml").display().to_string();
        let data = dir.join("data").display().to_string();
        let proc = ns.spawn(
            "prometheus",
            &[
                &format!("--config.file={cfg}"),
                &format!("--storage.tsdb.path={data}"),
                &format!("--web.listen-address={web}"),
                "--storage.tsdb.retention.time=1h",
            ],
        );
        Prometheus {
            proc: Some(proc),
            dir,
            web,
        }
    }

    /// The instant vector of `query` through the HTTP API: (labels, value) per series.
    pub fn query(&self, ns: &NetNs, query: &str) -> Option<Vec<(Value, f64)>> {
        let q: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_-.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let body = http_get(ns, &format!("http://{}/api/v1/query?query={q}", self.web))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        if v["status"] != "success" {
            return None;
        }
        Some(
            v["data"]["result"]
                .as_array()?
                .iter()
                .map(|r| {
                    let val = r["value"][1]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(f64::NAN);
                    (r["metric"].clone(), val)
                })
                .collect(),
        )
    }

    /// Poll `query` (bounded by `timeout`) until its single value satisfies `ok`; the last
    /// value seen.
    pub fn wait_value(
        &self,
        ns: &NetNs,
        query: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(r) = self.query(ns, query)
                && r.len() == 1
            {
                last = Some(r[0].1);
                if ok(r[0].1) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        last
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::stderr).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGTERM);
            let _ = p.finish(Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A datagram socket standing in for /dev/log (`FW_SYSLOG_SOCKET`), removed on drop.
pub struct SyslogSink {
    sock: UnixDatagram,
    dir: PathBuf,
}

impl SyslogSink {
    pub fn new(tag: &str) -> SyslogSink {
        let dir = std::env::temp_dir().join(format!("fw-syslog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("syslog dir");
        let sock = UnixDatagram::bind(dir.join("log")).expect("bind syslog socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        SyslogSink { sock, dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Messages received until `pred` holds for all of them together, or `timeout`.
    pub fn collect_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !pred(&got) {
            if let Ok(n) = self.sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Write a policy file into a fresh temp dir (removed with the returned guard).
pub struct TempPolicy {
    pub path: PathBuf,
}

impl TempPolicy {
    pub fn new(tag: &str, text: &str) -> TempPolicy {
        let path = std::env::temp_dir().join(format!("fw-obs-{tag}-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("policy file");
        TempPolicy { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
