//! The scale-out test's network: network namespaces joined by a bridge,
//! made with iproute2 and removed at the start (leftovers of a killed run)
//! and when the [`Net`] is dropped, on every exit path.
//!
//! ```text
//!   vso-h1 198.18.0.11   vso-h2 .12   vso-h3 .13   (vole hosts)
//!   vso-lb 198.18.0.10   (HAProxy)    vso-cl .20   (the client, dnsmasq)
//!   the test itself      198.18.0.2   (health probes, metrics)
//!        all on bridge br0 in vso-sw; no default route anywhere
//! ```
//!
//! A partition takes a host's port on the bridge down.

use std::process::{Command, Stdio};

/// The prefix of every name this test makes.
const PREFIX: &str = "vso";

/// The namespaces, with their addresses' last octet.
pub const MEMBERS: [(&str, u8); 5] = [("h1", 11), ("h2", 12), ("h3", 13), ("lb", 10), ("cl", 20)];

/// The test's own address on the network.
pub const ROOT_ADDR: &str = "198.18.0.2";

/// The address of a member.
pub fn addr(member: &str) -> String {
    let octet = MEMBERS
        .iter()
        .find(|(m, _)| *m == member)
        .map(|(_, o)| *o)
        .unwrap_or_else(|| panic!("no member {member}"));
    format!("198.18.0.{octet}")
}

/// The namespace of a member.
pub fn ns(member: &str) -> String {
    format!("{PREFIX}-{member}")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e} (iproute2 is needed)"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) -> Option<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills every process in namespace `name` (a netns outlives its name
/// while a process is in it).
pub fn kill_all_in(name: &str) {
    let Some(pids) = ip_quiet(&["netns", "pids", name]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes whatever a run of this test left: its namespaces (and the
/// processes in them), the test's own interface and the client's
/// resolv.conf.
fn clean() {
    let list = ip_quiet(&["netns", "list"]).unwrap_or_default();
    for name in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
    {
        kill_all_in(name);
        let _ = ip_quiet(&["netns", "del", name]);
    }
    let _ = ip_quiet(&["link", "del", &format!("{PREFIX}-root")]);
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", ns("cl")));
}

/// The network (see the module documentation).
pub struct Net {
    _private: (),
}

impl Net {
    /// Makes the network, after removing a previous run's.
    pub fn create() -> Net {
        clean();
        let net = Net { _private: () };
        let sw = ns("sw");
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "set", "lo", "up"]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for (member, _) in MEMBERS {
            let name = ns(member);
            let (inner, port) = (format!("{PREFIX}-{member}"), format!("{PREFIX}b-{member}"));
            ip(&["netns", "add", &name]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            ip(&["link", "add", &inner, "type", "veth", "peer", "name", &port]);
            ip(&["link", "set", &inner, "netns", &name]);
            ip(&["-n", &name, "link", "set", &inner, "name", "eth0"]);
            let cidr = format!("{}/24", addr(member));
            ip(&["-n", &name, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["link", "set", &port, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
        }
        let (root, port) = (format!("{PREFIX}-root"), format!("{PREFIX}b-root"));
        ip(&["link", "add", &root, "type", "veth", "peer", "name", &port]);
        ip(&["link", "set", &port, "netns", &sw]);
        ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &sw, "link", "set", &port, "up"]);
        ip(&["addr", "add", &format!("{ROOT_ADDR}/24"), "dev", &root]);
        ip(&["link", "set", &root, "up"]);
        net
    }

    /// A command run in `member`'s namespace (`ip netns exec` execs it, so
    /// the child's pid is the program's).
    pub fn command(&self, member: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns(member), program]);
        c
    }

    /// Cuts `member` off the network (its port on the bridge down), or
    /// joins it again.
    pub fn set_link(&self, member: &str, up: bool) {
        let port = format!("{PREFIX}b-{member}");
        ip(&[
            "-n",
            &ns("sw"),
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }

    /// Makes `name` resolve, in the client's namespace, through a DNS
    /// server at 127.0.0.1 there (`ip netns exec` puts
    /// /etc/netns/NS/resolv.conf in place of /etc/resolv.conf).
    pub fn client_resolver(&self) {
        let dir = format!("/etc/netns/{}", ns("cl"));
        std::fs::create_dir_all(&dir).expect("/etc/netns");
        std::fs::write(format!("{dir}/resolv.conf"), "nameserver 127.0.0.1\n")
            .expect("resolv.conf");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        clean();
    }
}
