//! The deployment files in `deploy/` are used as they are, so they cannot
//! go stale: the Kubernetes manifests validate strictly (offline, with
//! PyPI's `kubernetes-validate`) and agree with the settings in their
//! ConfigMap, which `vole config check` accepts; HAProxy and nginx accept
//! their configurations (`haproxy -c`, `nginx -t`).
//!
//! `.ci/run` installs the tools (`haproxy`, `nginx` with its stream module
//! from Debian, `kubernetes-validate` in `target/k8s-venv`, named by
//! `VOLE_K8S_PYTHON`). Under `CI=true` a missing tool fails the test;
//! elsewhere the test says what it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

const VOLE: &str = env!("CARGO_BIN_EXE_vole");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.35.0";

/// A tool a test needs: present, or (outside CI) `None` with a note.
fn required(what: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is missing (CI=true): .ci/run installs it"
        );
        eprintln!("skipped: {what} is missing (.ci/run installs it)");
    }
    found
}

fn k8s_python() -> Option<PathBuf> {
    let found = std::env::var_os("VOLE_K8S_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    required("VOLE_K8S_PYTHON (a python with kubernetes-validate)", found)
}

fn which(tool: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists());
    required(tool, found)
}

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    files
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vole-deploy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let Some(python) = k8s_python() else { return };
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let validate = python.with_file_name("kubernetes-validate");
    let (ok, text) = run(Command::new(&validate)
        .args(["--strict", "-k", KUBERNETES])
        .args(&files));
    assert!(ok, "{text}");
    // The validator is not a rubber stamp: a wrong type fails.
    let dir = TempDir::new("bad");
    let bad = dir.0.join("bad.yaml");
    let deployment =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/deployment.yaml"))
            .expect("deployment.yaml");
    std::fs::write(&bad, deployment.replace("replicas: 3", "replicas: three")).expect("write");
    let (ok, text) = run(Command::new(&validate)
        .args(["--strict", "-k", KUBERNETES])
        .arg(&bad));
    assert!(!ok, "a bad manifest passed: {text}");
}

/// Grace arithmetic, probe and drain wiring (tests/deploy/check_manifests.py),
/// then `vole config check` of the ConfigMap's settings with the mounted
/// paths mapped to a test directory (the TLS Secret's files made here).
#[test]
fn kubernetes_manifests_agree_with_their_settings() {
    let Some(python) = k8s_python() else { return };
    let dir = TempDir::new("settings");
    let toml = dir.0.join("vole.toml");
    let (ok, text) = run(Command::new(&python)
        .arg(Path::new(ROOT).join("tests/deploy/check_manifests.py"))
        .arg(Path::new(ROOT).join("deploy/kubernetes"))
        .arg(&toml));
    assert!(ok, "{text}");
    let (cert, key) =
        vole_transport::tls::ensure_dev_identity(&dir.0.join("secret")).expect("a certificate");
    let text = std::fs::read_to_string(&toml).expect("vole.toml");
    for mounted in ["/etc/vole/tls/tls.crt", "/etc/vole/tls/tls.key"] {
        assert!(text.contains(mounted), "{mounted} not in the settings");
    }
    let tickets = dir.0.join("ticket.keys");
    std::fs::write(&tickets, [7u8; 48]).expect("ticket keys");
    assert!(text.contains("/etc/vole/tickets/ticket.keys"), "{text}");
    let mapped = text
        .replace("/etc/vole/tickets/ticket.keys", &tickets.to_string_lossy())
        .replace("/etc/vole/tls/tls.crt", &cert.to_string_lossy())
        .replace("/etc/vole/tls/tls.key", &key.to_string_lossy())
        .replace("/var/lib/vole", &dir.0.join("state").to_string_lossy())
        .replace("/run/vole", &dir.0.join("run").to_string_lossy());
    std::fs::write(&toml, mapped).expect("write");
    let (ok, text) = run(Command::new(VOLE)
        .args(["config", "check"])
        .arg(&toml)
        .env("NO_COLOR", "1"));
    assert!(ok, "vole config check: {text}");
    assert!(text.contains(": ok (2 node(s)"), "{text}");
}

#[test]
fn haproxy_accepts_its_configuration() {
    let Some(haproxy) = which("haproxy") else {
        return;
    };
    let (ok, text) = run(Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(Path::new(ROOT).join("deploy/haproxy/haproxy.cfg")));
    assert!(ok, "{text}");
}

#[test]
fn nginx_accepts_its_stream_configuration() {
    let Some(nginx) = which("nginx") else { return };
    let module = ["/usr/lib/nginx/modules/ngx_stream_module.so"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(module) = required("nginx's stream module", module) else {
        return;
    };
    let dir = TempDir::new("nginx");
    let main = dir.0.join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "load_module {};\nerror_log stderr;\npid {};\nevents {{}}\ninclude {};\n",
            module.display(),
            dir.0.join("nginx.pid").display(),
            Path::new(ROOT).join("deploy/nginx/stream.conf").display()
        ),
    )
    .expect("nginx.conf");
    let (ok, text) = run(Command::new(nginx).arg("-t").arg("-c").arg(&main));
    assert!(ok, "{text}");
}
