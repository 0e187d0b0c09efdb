//! The scale-out test's parts: the hosts, HAProxy, dnsmasq and the load,
//! each a process in its namespace, killed when dropped.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{TempDir, VOLE};
use crate::net::{self, Net};

/// The port every host serves VOP on, HAProxy's too.
const VOP_PORT: u16 = 4433;
/// The hosts' health port (as `deploy/haproxy/haproxy.cfg` checks it).
const HEALTH_PORT: u16 = 9465;
/// The hosts' metrics port.
const METRICS_PORT: u16 = 9466;
/// The name the client calls (its TLS server name; dnsmasq serves it).
const NAME: &str = "vole.test";
/// When the event comes, after the load began.
pub const EVENT_AT: Duration = Duration::from_secs(3);

fn tool(name: &str) -> bool {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing (CI=true): .ci/run installs it"
        );
        eprintln!("skipped: {name} is missing (.ci/run installs it)");
    }
    found
}

fn prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the scale-out test makes network namespaces: it needs root (CI=true)"
        );
        eprintln!("skipped: the scale-out test needs root (network namespaces)");
        return false;
    }
    ["ip", "haproxy", "dnsmasq"].into_iter().all(tool)
}

/// Lines a process wrote, each with when it was read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(Instant, String)>>>);

impl Lines {
    fn follow(&self, from: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                if let Ok(mut l) = lines.lock() {
                    l.push((Instant::now(), line));
                }
            }
        });
    }

    fn first(&self, pred: impl Fn(&str) -> bool) -> Option<Instant> {
        let l = self.0.lock().ok()?;
        l.iter().find(|(_, s)| pred(s)).map(|(t, _)| *t)
    }

    fn first_after(&self, since: Instant, pred: impl Fn(&str) -> bool) -> Option<Instant> {
        let l = self.0.lock().ok()?;
        l.iter()
            .find(|(t, s)| *t >= since && pred(s))
            .map(|(t, _)| *t)
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .map(|l| l.iter().map(|(_, s)| format!("{s}\n")).collect())
            .unwrap_or_default()
    }
}

/// A child process, killed and reaped when dropped.
struct Proc(Mutex<Child>);

impl Proc {
    fn pid(&self) -> Pid {
        let id = self.0.lock().map(|c| c.id()).unwrap_or(0);
        Pid::from_raw(i32::try_from(id).unwrap_or(0))
    }

    fn try_code(&self) -> Option<Option<i32>> {
        let mut c = self.0.lock().ok()?;
        c.try_wait().ok().flatten().map(|s| s.code())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(c) = self.0.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One `vole serve` host.
pub struct Host {
    member: &'static str,
    proc: Proc,
    log: PathBuf,
}

impl Host {
    /// Sends `sig` to the controller.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(self.proc.pid(), sig);
    }

    /// Sends `sig` to every process of the host (controller and nodes).
    pub fn signal_all(&self, sig: Signal) {
        let out = Command::new("ip")
            .args(["netns", "pids", &net::ns(self.member)])
            .output()
            .expect("ip netns pids");
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// SIGKILL of every process of the host at once.
    pub fn kill_all(&self) {
        self.signal_all(Signal::SIGKILL);
    }

    /// Waits for the controller to exit; its exit code.
    pub async fn wait_exit(&self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.proc.try_code() {
                return code;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the host logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The hosts and, behind HAProxy, the balancer; or without it, dnsmasq.
pub struct Cluster {
    // Dropped first: the processes, then the network, then the files.
    hosts: Vec<Host>,
    balancer: Option<(Proc, Lines)>,
    _dns: Option<Proc>,
    pub net: Net,
    pin: String,
    /// The certificate and key every host serves.
    identity: (PathBuf, PathBuf),
    proxied: bool,
    /// The session-ticket key file every host shares, if they do.
    ticket_keys: Option<PathBuf>,
    dir: TempDir,
}

impl Cluster {
    /// Three hosts, behind HAProxy (`proxied`: they then take PROXY
    /// headers from it alone) or named by DNS; `None` when a prerequisite
    /// is missing outside CI.
    pub async fn start(proxied: bool) -> Option<Cluster> {
        Cluster::start_with(proxied, false).await
    }

    /// [`Cluster::start`], the hosts sharing a session-ticket key file if
    /// `shared_tickets`.
    pub async fn start_with(proxied: bool, shared_tickets: bool) -> Option<Cluster> {
        if !prerequisites() {
            return None;
        }
        let dir = TempDir::new("scaleout");
        let net = Net::create();
        let (cert, key) =
            vole_transport::tls::ensure_dev_identity(&dir.path().join("tls")).expect("a cert");
        let der = vole_transport::tls::load_certs(&cert)
            .expect("cert")
            .remove(0);
        let pin = vole_transport::tls::fingerprint_hex(&vole_transport::tls::fingerprint(&der));
        let ticket_keys = shared_tickets.then(|| {
            let file = dir.path().join("tls").join("tickets.key");
            // One key: a 16-byte name and a 32-byte key.
            let key: Vec<u8> = (0u8..48)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect();
            std::fs::write(&file, key).expect("ticket key file");
            file
        });
        let mut c = Cluster {
            hosts: Vec::new(),
            balancer: None,
            _dns: None,
            net,
            pin,
            identity: (cert, key),
            proxied,
            ticket_keys,
            dir,
        };
        for m in ["h1", "h2", "h3"] {
            let h = c.spawn_host(m);
            c.hosts.push(h);
        }
        for m in ["h1", "h2", "h3"] {
            c.wait_ready(m).await;
        }
        if proxied {
            c.balancer = Some(c.spawn_haproxy());
            c.haproxy_listens().await;
        } else {
            c._dns = Some(c.spawn_dnsmasq());
            c.net.client_resolver();
            c.wait_resolves().await;
        }
        Some(c)
    }

    fn spawn_host(&self, member: &'static str) -> Host {
        let addr = net::addr(member);
        let state = self.dir.path().join(member);
        std::fs::create_dir_all(&state).expect("state dir");
        let log = self.dir.path().join(format!("{member}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = self.net.command(member, VOLE);
        cmd.arg("serve")
            .args(["--listen", &format!("{addr}:{VOP_PORT}")])
            .args(["--health", &format!("{addr}:{HEALTH_PORT}")])
            .args(["--metrics", &format!("{addr}:{METRICS_PORT}")])
            .args(["--nodes", "2", "--shutdown-delay", "1", "--grace", "5"])
            .arg("--state-dir")
            .arg(&state)
            .arg("--tls-cert")
            .arg(&self.identity.0)
            .arg("--tls-key")
            .arg(&self.identity.1);
        if let Some(keys) = &self.ticket_keys {
            cmd.arg("--tls-ticket-key-file").arg(keys);
        }
        if self.proxied {
            cmd.args(["--proxy-protocol", "required"])
                .args(["--proxy-protocol-from", &format!("{}/32", net::addr("lb"))]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("vole serve starts");
        Host {
            member,
            proc: Proc(Mutex::new(child)),
            log,
        }
    }

    fn spawn_haproxy(&self) -> (Proc, Lines) {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
        let mut child = self
            .net
            .command("lb", "haproxy")
            .arg("-db")
            .arg("-f")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let lines = Lines::default();
        lines.follow(child.stdout.take().expect("stdout"));
        lines.follow(child.stderr.take().expect("stderr"));
        (Proc(Mutex::new(child)), lines)
    }

    fn spawn_dnsmasq(&self) -> Proc {
        let mut cmd = self.net.command("cl", "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file",
            "--user=root",
        ]);
        for m in ["h1", "h2", "h3"] {
            let addr = net::addr(m);
            cmd.arg(format!("--host-record={NAME},{addr}"));
            // Each host by its own name too, and the SRV records naming
            // them (as a Kubernetes headless Service's port `vop` does).
            cmd.arg(format!("--host-record={m}.{NAME},{addr}"));
            cmd.arg(format!(
                "--srv-host=_vop._tcp.{NAME},{m}.{NAME},{VOP_PORT},0,10"
            ));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        Proc(Mutex::new(child))
    }

    /// Waits until `vole.test` resolves to the three hosts in the client's
    /// namespace (dnsmasq is up).
    async fn wait_resolves(&self) {
        let began = Instant::now();
        loop {
            let out = self
                .net
                .command("cl", "python3")
                .args(["-c", &format!("import socket; print(len({{a[4][0] for a in socket.getaddrinfo('{NAME}', 1)}}))")])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .expect("python3 runs");
            if String::from_utf8_lossy(&out.stdout).trim() == "3" {
                return;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "{NAME} never resolved"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The host `member`.
    pub fn host(&self, member: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.member == member)
            .unwrap_or_else(|| panic!("no host {member}"))
    }

    /// Starts `member` again (after it stopped) and waits until it is ready.
    pub async fn restart(&mut self, member: &'static str) {
        let h = self.spawn_host(member);
        if let Some(slot) = self.hosts.iter_mut().find(|h| h.member == member) {
            *slot = h;
        }
        self.wait_ready(member).await;
    }

    async fn wait_ready(&self, member: &str) {
        let ready = self
            .time_to_status(member, 200, Duration::from_secs(15))
            .await;
        assert!(
            ready.is_some(),
            "{member} never ready:\n{}",
            self.host(member).log()
        );
    }

    /// How long until `member`'s `/readyz` answers `code` (polled as fast
    /// as it answers).
    pub async fn time_to_status(
        &self,
        member: &str,
        code: u16,
        limit: Duration,
    ) -> Option<Duration> {
        let began = Instant::now();
        let addr = format!("{}:{HEALTH_PORT}", net::addr(member));
        while began.elapsed() < limit {
            if http_status(&addr, "/readyz").await == Some(code) {
                return Some(began.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    fn server(member: &str) -> String {
        format!("vole/host{}", member.trim_start_matches('h'))
    }

    /// Waits until HAProxy logs `member` UP again after `since` (when it
    /// was stopped).
    pub async fn haproxy_sees_up(&self, member: &str, since: Instant, limit: Duration) {
        let (proc, lines) = self.balancer.as_ref().expect("haproxy");
        let server = Self::server(member);
        let began = Instant::now();
        while lines
            .first_after(since, |s| s.contains(&server) && s.contains("is UP"))
            .is_none()
        {
            assert!(
                proc.try_code().is_none(),
                "HAProxy exited:\n{}",
                lines.text()
            );
            assert!(
                began.elapsed() < limit,
                "HAProxy never had {server} up again:\n{}",
                lines.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until HAProxy accepts connections (its servers start up).
    async fn haproxy_listens(&self) {
        let (proc, lines) = self.balancer.as_ref().expect("haproxy");
        let addr = format!("{}:{VOP_PORT}", net::addr("lb"));
        let began = Instant::now();
        loop {
            let connect = tokio::net::TcpStream::connect(&addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
                return;
            }
            assert!(
                proc.try_code().is_none(),
                "HAProxy exited:\n{}",
                lines.text()
            );
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "HAProxy never listened:\n{}",
                lines.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What HAProxy logged.
    pub fn haproxy_log(&self) -> String {
        self.balancer
            .as_ref()
            .map(|(_, l)| l.text())
            .unwrap_or_default()
    }

    /// How long after `event` HAProxy logged `member` DOWN.
    pub async fn haproxy_down_after(
        &self,
        member: &str,
        event: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        let (_, lines) = self.balancer.as_ref().expect("haproxy");
        let server = Self::server(member);
        let began = Instant::now();
        while began.elapsed() < limit {
            if let Some(t) = lines.first(|s| s.contains(&server) && s.contains("is DOWN")) {
                return Some(t.saturating_duration_since(event));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// The share of new links `member` takes over `within`, through
    /// HAProxy: new sessions from the client, counted by each host's
    /// accepted connections.
    pub async fn share_of_new_links(&self, member: &str, within: Duration) -> f64 {
        let before = self.accepts().await;
        let out = self
            .net
            .command("cl", VOLE)
            .args(["bench", "--sessions", "--no-resume", "-n", "4", "-w", "0"])
            .args(["-d", &format!("{}", within.as_secs_f64())])
            .args([
                "--target",
                &format!("vop://{}:{VOP_PORT}/text/echo/", net::addr("lb")),
            ])
            .args(["--pin", &self.pin, "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("vole bench runs");
        assert!(
            out.status.success(),
            "vole bench --sessions after recovery: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = self.accepts().await;
        let delta: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.saturating_sub(*b) as f64)
            .collect();
        let total: f64 = delta.iter().sum();
        let i = ["h1", "h2", "h3"]
            .iter()
            .position(|m| *m == member)
            .unwrap_or(0);
        if total == 0.0 {
            0.0
        } else {
            delta[i] / total
        }
    }

    /// Connections each host accepted, from its metrics.
    async fn accepts(&self) -> Vec<u64> {
        let mut all = Vec::new();
        for m in ["h1", "h2", "h3"] {
            let addr = format!("{}:{METRICS_PORT}", net::addr(m));
            let body = http_get(&addr, "/metrics").await.unwrap_or_default();
            let n: f64 = body
                .lines()
                .filter(|l| l.starts_with("vole_accepts_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            all.push(n as u64);
        }
        all
    }
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_millis(300), connect)
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

async fn http_status(addr: &str, path: &str) -> Option<u16> {
    let text = http_get(addr, path).await?;
    text.split_whitespace().nth(1)?.parse().ok()
}

impl Cluster {
    /// `vole call` from the client's namespace; its exit code and output.
    pub fn call(&self, uri: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self
            .net
            .command("cl", VOLE)
            .args(["call", "--pin", &self.pin, uri])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("vole call runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `vole bench` in the client's namespace with `args` (and the pin);
    /// its JSON summary, or its exit code and stderr.
    pub fn bench(&self, args: &[&str]) -> Result<Report, (Option<i32>, String)> {
        let out = self
            .net
            .command("cl", VOLE)
            .arg("bench")
            .args(args)
            .args(["--pin", &self.pin, "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("vole bench runs");
        serde_json::from_slice(&out.stdout)
            .map(|json| Report { json })
            .map_err(|_| {
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
    }

    /// The VOP URI of the service through HAProxy, or of host `member`.
    pub fn uri(&self, member: &str) -> String {
        format!("vop://{}:{VOP_PORT}/", net::addr(member))
    }

    /// New sessions, one worker, through HAProxy for `seconds`: the
    /// fraction resumed (each presents the newest ticket, which the host
    /// before issued) and how many there were.
    pub fn resumed_through_haproxy(&self, seconds: f64) -> (f64, u64) {
        let out = self
            .net
            .command("cl", VOLE)
            .args(["bench", "--sessions", "-n", "1", "-w", "0", "--json"])
            .args(["-d", &seconds.to_string()])
            .args(["--target", &format!("{}text/echo/", self.uri("lb"))])
            .args(["--pin", &self.pin])
            .stdin(Stdio::null())
            .output()
            .expect("vole bench runs");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("no summary ({e}): {}", String::from_utf8_lossy(&out.stderr))
        });
        (
            json["resumed_fraction"].as_f64().unwrap_or(0.0),
            json["sessions"].as_u64().unwrap_or(0),
        )
    }
}

/// The load's shape.
pub struct Load {
    /// Through HAProxy (its address as the one endpoint), or by DNS.
    haproxy: bool,
    idempotent: bool,
    pub seconds: f64,
}

impl Load {
    /// Through HAProxy.
    pub fn haproxy(idempotent: bool) -> Load {
        Load {
            haproxy: true,
            idempotent,
            seconds: 8.0,
        }
    }

    /// To every address `vole.test` resolves to.
    pub fn dns(idempotent: bool) -> Load {
        Load {
            haproxy: false,
            idempotent,
            seconds: 8.0,
        }
    }
}

/// `vole bench` through the failover client, in the client's namespace.
pub struct Bench {
    proc: Proc,
    began: mpsc::Receiver<Instant>,
    stderr: Lines,
    seconds: f64,
}

/// Calls per second over all links.
const RATE: u32 = 480;

impl Bench {
    pub async fn start(c: &Cluster, load: Load) -> Bench {
        let mut cmd = c.net.command("cl", VOLE);
        cmd.args(["bench", "-n", "12", "-m", "2", "-w", "0", "--json"])
            .args(["--rate", &RATE.to_string(), "--call-timeout", "1"])
            .args(["-d", &load.seconds.to_string()])
            .args(["--target", &format!("vop://{NAME}:{VOP_PORT}/text/echo/")])
            .args(["--pin", &c.pin]);
        if load.haproxy {
            cmd.args(["--endpoints", &format!("{}:{VOP_PORT}", net::addr("lb"))]);
        }
        if load.idempotent {
            cmd.arg("--idempotent");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vole bench starts");
        let (tx, began) = mpsc::channel();
        let stderr = Lines::default();
        let err = child.stderr.take().expect("stderr");
        let lines = stderr.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("load begins") {
                    let _ = tx.send(Instant::now());
                }
                if let Ok(mut l) = lines.lock() {
                    l.push((Instant::now(), line));
                }
            }
        });
        Bench {
            proc: Proc(Mutex::new(child)),
            began,
            stderr,
            seconds: load.seconds,
        }
    }

    /// Waits until the event is due ([`EVENT_AT`] into the load); when.
    pub async fn at_event(&self) -> Instant {
        let began = loop {
            match self.began.try_recv() {
                Ok(t) => break t,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("the load never began:\n{}", self.stderr.text())
                }
                Err(mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        tokio::time::sleep_until((began + EVENT_AT).into()).await;
        Instant::now()
    }

    /// When the event came, counted as the load counts (from its start).
    pub fn event_offset(&self) -> Duration {
        EVENT_AT
    }

    /// Waits for the load to end; its report.
    pub async fn finish(&self) -> Report {
        let limit = Duration::from_secs_f64(self.seconds) + Duration::from_secs(30);
        let began = Instant::now();
        loop {
            if self.proc.try_code().is_some() {
                break;
            }
            assert!(
                began.elapsed() < limit,
                "the load never ended:\n{}",
                self.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut out = String::new();
        if let Ok(mut c) = self.proc.0.lock() {
            if let Some(mut so) = c.stdout.take() {
                let _ = so.read_to_string(&mut out);
            }
        }
        let json: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("no summary ({e}): {out}\n{}", self.stderr.text()));
        Report { json }
    }
}

/// What the load saw.
pub struct Report {
    json: serde_json::Value,
}

impl Report {
    fn n(&self, key: &str) -> u64 {
        self.json["failover"][key].as_u64().unwrap_or(0)
    }

    /// Calls answered right.
    pub fn done(&self) -> u64 {
        self.n("ok") + self.n("retried")
    }

    /// Connections that failed, over all endpoints.
    pub fn connect_failures(&self) -> u64 {
        self.json["failover"]["hosts"]
            .as_array()
            .map(|h| h.iter().filter_map(|h| h["failed"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// Endpoints that got links.
    pub fn hosts_used(&self) -> usize {
        self.json["failover"]["hosts"]
            .as_array()
            .map(|h| h.iter().filter(|h| h["links"].as_u64() > Some(0)).count())
            .unwrap_or(0)
    }

    /// The longest call.
    pub fn longest_call(&self) -> Duration {
        Duration::from_secs_f64(
            self.json["failover"]["longest_call_s"]
                .as_f64()
                .unwrap_or(0.0),
        )
    }

    /// No call failed, none was interrupted.
    pub fn assert_no_failures(&self) {
        assert_eq!((self.n("interrupted"), self.n("failed")), (0, 0), "{self}");
        assert!(self.done() > 0, "{self}");
    }

    /// Nothing failed but calls cut off in flight, and those (none with
    /// `idempotent`) at most a host's share of the calls in flight, all
    /// within 1 s of the event.
    pub fn assert_only_interrupted_near(&self, idempotent: bool, event: Duration) {
        assert_eq!(self.n("failed"), 0, "{self}");
        let cut = self.n("interrupted");
        if idempotent {
            assert_eq!(cut, 0, "{self}");
        } else {
            // 12 links × 2 in flight over three hosts.
            assert!(cut <= 8, "{cut} interrupted: {self}");
        }
        if let Some(last) = self.json["failover"]["last_failure_s"].as_f64() {
            let after = last - event.as_secs_f64();
            assert!(
                after <= 1.0,
                "a failure {after:.3} s after the event: {self}"
            );
        }
        assert!(self.done() > 0, "{self}");
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fo = &self.json["failover"];
        write!(
            f,
            "ok {} retried {} interrupted {} failed {} (tries again {}), {} calls/s, longest call {:.3} s, failures between {} and {} s; hosts {}",
            fo["ok"], fo["retried"], fo["interrupted"], fo["failed"], fo["retries"],
            self.json["calls_per_s"], fo["longest_call_s"].as_f64().unwrap_or(0.0),
            fo["first_failure_s"], fo["last_failure_s"], fo["hosts"]
        )
    }
}
