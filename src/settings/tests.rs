//! Tests of the settings: the file, the command line over it, validation.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Settings, SettingsError> {
    let f = FileConfig::parse(text, Path::new("test.toml"))?;
    Settings::merge(&Overrides::default(), f, &Defaults::default())
}

fn err(text: &str) -> String {
    match parse(text) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("expected an error for {text:?}, got {s:?}"),
    }
}

#[test]
fn every_setting_reads_from_the_file() {
    let s = parse(
        r#"
        listen = ["127.0.0.1:5000", "[::1]:5000"]
        backlog = 64
        nodes = 3
        balance = "dispatch"
        threads = 2
        max-clients = 100
        max-node-clients = 40
        state-dir = "/tmp/x"
        handshake-timeout = 2.5
        write-timeout = 7
        max-message = 4096
        grace = 3
        admin-socket = "/tmp/x/admin.sock"
        pidfile = "/tmp/x/vole.pid"
        user = "nobody"
        group = "nogroup"
        allow-root-nodes = true
        metrics = "127.0.0.1:9100"
        ticket-rotation = 600
        [transports]
        tls = true
        plain = true
        [tls]
        cert = "/etc/vole/cert.pem"
        key = "/etc/vole/key.pem"
        [restart]
        intensity = 9
        period = 30
        backoff-base = 0.5
        backoff-max = 20
        [heartbeat]
        interval = 0.5
        timeout = 2
        [log]
        level = "debug"
        format = "json"
        file = "/var/log/vole.log"
        "#,
    )
    .expect("valid");
    assert_eq!(s.listen.len(), 2);
    assert_eq!(
        (s.backlog, s.nodes, s.balance, s.threads),
        (64, 3, Balance::Dispatch, Some(2))
    );
    assert_eq!(
        s.limits,
        Limits {
            max_clients: Some(100),
            max_node_clients: Some(40)
        }
    );
    assert_eq!(
        s.tls,
        TlsSetting::Files {
            cert: "/etc/vole/cert.pem".into(),
            key: "/etc/vole/key.pem".into()
        }
    );
    assert!(s.plain);
    assert_eq!(s.handshake_timeout, Duration::from_millis(2500));
    assert_eq!(s.restart.intensity, 9);
    assert_eq!(s.restart.base, Duration::from_millis(500));
    assert_eq!(s.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(
        (s.log_format, s.log_level.as_str()),
        (LogFormat::Json, "debug")
    );
    assert_eq!(s.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
    assert_eq!(s.ticket_rotation, Duration::from_secs(600));
    assert!(s.allow_root_nodes);
}

#[test]
fn flags_override_the_file() {
    let f = FileConfig::parse(
        "nodes = 3\nbalance = \"shared\"\ngrace = 5\n",
        Path::new("t"),
    )
    .expect("file");
    let args = Overrides {
        nodes: Some(1),
        grace: Some(2.0),
        ..Overrides::default()
    };
    let s = Settings::merge(&args, f, &Defaults::default()).expect("valid");
    assert_eq!(
        (s.nodes, s.balance, s.grace),
        (1, Balance::Shared, Duration::from_secs(2))
    );
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key() {
    let e = err("nodez = 3\n");
    assert!(e.contains("nodez"), "{e}");
    let e = err("nodes = \"three\"\n");
    assert!(e.contains("nodes") && e.contains("invalid type"), "{e}");
    let e = err("[restart]\nintensity = -1\n");
    assert!(e.contains("restart.intensity"), "{e}");
    let e = err("[log]\nformat = \"xml\"\n");
    assert!(e.contains("log.format"), "{e}");
    let e = err("balance = \"random\"\n");
    assert!(e.contains("balance"), "{e}");
    let e = err("[tls]\ncolour = 1\n");
    assert!(e.contains("colour"), "{e}");
    let e = err("listen = [\"localhost\"]\n");
    assert!(e.contains("listen") && e.contains("no port"), "{e}");
    let e = err("nodes = \n");
    assert!(e.contains("test.toml"), "{e}");
}

#[test]
fn listen_takes_host_port_v6_port_and_a_bare_port() {
    let s = parse("listen = [\"127.0.0.1:5000\", \"[::1]:5001\", \":5002\"]\n").expect("parses");
    assert_eq!(
        s.listen,
        vec![
            "127.0.0.1:5000".parse().expect("addr"),
            "[::1]:5001".parse().expect("addr"),
            "0.0.0.0:5002".parse().expect("addr"),
        ]
    );
    // A host name: every address it resolves to, each once.
    let s = parse("listen = [\"localhost:5003\", \"127.0.0.1:5003\"]\n").expect("resolves");
    assert!(
        s.listen.contains(&"127.0.0.1:5003".parse().expect("addr")),
        "{:?}",
        s.listen
    );
    let mut unique = s.listen.clone();
    unique.dedup();
    assert_eq!(unique.len(), s.listen.len(), "{:?}", s.listen);
    for (bad, why) in [
        ("5000", "no port"),
        ("127.0.0.1:http", "not a port number"),
        ("127.0.0.1:70000", "not a port number"),
        ("::1:5000", "brackets"),
        ("no-such-host.invalid:5000", "cannot resolve"),
    ] {
        let e = err(&format!("listen = [{bad:?}]\n"));
        assert!(e.starts_with("listen:") && e.contains(why), "{bad}: {e}");
    }
    let args = Overrides {
        listen: vec![":6000".to_owned()],
        ..Overrides::default()
    };
    let s = Settings::merge(&args, FileConfig::default(), &Defaults::default()).expect("merges");
    assert_eq!(s.listen, vec!["0.0.0.0:6000".parse().expect("addr")]);
}

#[test]
fn keep_alive_and_idle_timeout() {
    let s = parse("").expect("defaults");
    assert_eq!(s.keep_alive, Some(Duration::from_secs(30)));
    assert_eq!(s.idle_timeout, None);
    let s = parse("keep-alive = 2.5\nidle-timeout = 600\n").expect("set");
    assert_eq!(s.keep_alive, Some(Duration::from_millis(2500)));
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(600)));
    let s = parse("keep-alive = 0\nidle-timeout = 0\n").expect("off");
    assert_eq!((s.keep_alive, s.idle_timeout), (None, None));
    let args = Overrides {
        keep_alive: Some(0.5),
        idle_timeout: Some(9.0),
        ..Overrides::default()
    };
    let f =
        FileConfig::parse("keep-alive = 3\nidle-timeout = 1\n", Path::new("t")).expect("parses");
    let s = Settings::merge(&args, f, &Defaults::default()).expect("merges");
    assert_eq!(s.keep_alive, Some(Duration::from_millis(500)));
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(9)));
}

#[test]
fn vts_is_off_by_default_and_read_from_file_and_flags() {
    assert_eq!(parse("").expect("empty").vts, VtsSetting::Disabled);
    let s = parse("[transports]\nvts = true\n").expect("vts");
    assert_eq!(s.vts, VtsSetting::Generated);
    let s = parse("[transports]\nvts = true\nvts-key = \"k.pem\"\n").expect("vts key");
    assert_eq!(s.vts, VtsSetting::File("k.pem".into()));
    // VTS alone is something to serve.
    let s = parse("[transports]\ntls = false\nvts = true\n").expect("vts only");
    assert_eq!((s.tls, s.plain), (TlsSetting::Disabled, false));
    let args = Overrides {
        vts: true,
        vts_key: Some("f.pem".into()),
        ..Overrides::default()
    };
    let s = Settings::merge(&args, FileConfig::default(), &Defaults::default()).expect("merges");
    assert_eq!(s.vts, VtsSetting::File("f.pem".into()));
    assert_eq!(s.vts_ciphers, crate::defaults::vts_ciphers());
}

#[test]
fn vts_ciphers_read_in_order_and_refuse_unknown_names() {
    use vole_transport::vts::Suite;
    let s = parse(
        "[transports]\nvts = true\nvts-ciphers = [\"blowfish-cbc\", \"aes256-ofb\", \"blowfish-cbc\"]\n",
    )
    .expect("ciphers");
    let want: Vec<Suite> = ["blowfish-cbc", "aes256-ofb"]
        .iter()
        .filter_map(|n| Suite::parse(n))
        .collect();
    assert_eq!(s.vts_ciphers, want);
    let args = Overrides {
        vts: true,
        vts_ciphers: Some("blowfish128-ofb, blowfish-cbc".to_owned()),
        ..Overrides::default()
    };
    let s = Settings::merge(&args, FileConfig::default(), &Defaults::default()).expect("merges");
    assert_eq!(s.vts_ciphers.len(), 2);
    assert!(
        err("[transports]\nvts-ciphers = [\"des-cbc\"]\n").starts_with("transports.vts-ciphers:")
    );
    assert!(err("[transports]\nvts-ciphers = []\n").starts_with("transports.vts-ciphers:"));
}

#[test]
fn invalid_values_name_the_key() {
    assert!(err("grace = 0\n").starts_with("grace:"));
    assert!(err("[transports]\ntls = false\n").starts_with("transports:"));
    assert!(err("[tls]\ncert = \"a.pem\"\n").starts_with("tls.key:"));
    assert!(err("[transports]\nvts-key = \"k.pem\"\n").starts_with("transports.vts-key:"));
    assert!(err("[transports]\nvts = 1\n").contains("vts"));
    assert!(err("node-command = \"x\"\n[transports]\nvts = true\n").starts_with("transports.vts:"));
    assert!(err("max-message = 10\n").starts_with("max-message:"));
    assert!(err("backlog = 0\n").starts_with("backlog:"));
    assert!(err("[log]\nlevel = \"not[a filter\"\n").starts_with("log.level:"));
    assert!(
        err("[restart]\nbackoff-base = 9\nbackoff-max = 1\n").starts_with("restart.backoff-base:")
    );
    assert!(err("nodes = 0\nuser = \"nobody\"\n").starts_with("user:"));
    assert!(err("keep-alive = -1\n").starts_with("keep-alive:"));
    assert!(err("keep-alive = 0.01\n").starts_with("keep-alive:"));
    assert!(err("keep-alive = inf\n").starts_with("keep-alive:"));
    assert!(err("idle-timeout = -5\n").starts_with("idle-timeout:"));
    assert!(err("idle-timeout = nan\n").starts_with("idle-timeout:"));
    let daemon = Overrides {
        daemon: true,
        ..Overrides::default()
    };
    assert!(
        Settings::merge(&daemon, FileConfig::default(), &Defaults::default())
            .is_err_and(|e| e.to_string().starts_with("pidfile:"))
    );
}

#[test]
fn defaults_without_a_file() {
    let s = Settings::merge(
        &Overrides {
            nodes: Some(2),
            ..Overrides::default()
        },
        FileConfig::default(),
        &Defaults::default(),
    )
    .expect("ok");
    assert_eq!(s.listen, vec![SocketAddr::from(([127, 0, 0, 1], 4433))]);
    assert_eq!(s.tls, TlsSetting::Dev);
    assert!(!s.plain);
    assert_eq!(s.grace, Duration::from_secs(10));
    assert_eq!(s.balance, Balance::Grant);
    assert!(s.service.is_none());
}

#[test]
fn a_host_s_defaults_apply_under_the_file_and_flags() {
    let defaults = Defaults {
        port: 7000,
        state_dir: PathBuf::from("/srv/greeter"),
    };
    let s = Settings::merge(&Overrides::default(), FileConfig::default(), &defaults).expect("ok");
    assert_eq!(s.listen, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]);
    assert_eq!(s.state_dir, PathBuf::from("/srv/greeter"));
    assert_eq!(
        s.admin_path(s.listen.first()),
        PathBuf::from("/srv/greeter/admin-7000.sock")
    );
    let f = FileConfig::parse("state-dir = \"/x\"\n", Path::new("t")).expect("file");
    let s = Settings::merge(&Overrides::default(), f, &defaults).expect("ok");
    assert_eq!(s.state_dir, PathBuf::from("/x"));
}

#[test]
fn the_service_table_is_kept_for_the_service() {
    let s = parse("[service]\ngreeting = \"hi\"\n[service.db]\npool = 4\n").expect("ok");
    let table = s.service.expect("a table");
    assert_eq!(table["greeting"].as_str(), Some("hi"));
    assert_eq!(table["db"]["pool"].as_integer(), Some(4));
    let e = err("service = 3\n");
    assert!(e.contains("service"), "{e}");
}

#[test]
fn external_nodes_take_a_command_and_shared_or_reuseport() {
    let s = parse("nodes = 2\nnode-command = \"python3 'my svc.py' --x\"\n").expect("ok");
    assert_eq!(
        s.node_command,
        Some(vec![
            "python3".to_owned(),
            "my svc.py".to_owned(),
            "--x".to_owned()
        ])
    );
    assert_eq!(s.balance, Balance::Shared, "shared by default");
    assert_eq!(s.tls, TlsSetting::Disabled, "vole's TLS is not theirs");
    let s =
        parse("nodes = 2\nbalance = \"reuseport\"\nnode-command = [\"a b\", \"c\"]\n").expect("ok");
    assert_eq!(s.node_command, Some(vec!["a b".to_owned(), "c".to_owned()]));
    assert_eq!(s.balance, Balance::Reuseport);
    for mode in ["grant", "dispatch"] {
        let e = err(&format!("balance = \"{mode}\"\nnode-command = \"x\"\n"));
        assert!(
            e.starts_with("balance:") && e.contains("shared or reuseport"),
            "{e}"
        );
    }
    assert!(err("node-command = \"\"\n").starts_with("node-command: is empty"));
    assert!(err("node-command = []\n").starts_with("node-command: is empty"));
    assert!(err("node-command = \"a 'b\"\n").starts_with("node-command: cannot split"));
    assert!(err("nodes = 0\nnode-command = \"x\"\n").starts_with("nodes:"));
    assert!(
        err("node-command = \"x\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n").starts_with("tls.cert:")
    );
    let flag = Overrides {
        node_command: Some("svc --port-from-fd".to_owned()),
        nodes: Some(3),
        ..Overrides::default()
    };
    let f = FileConfig::parse("node-command = \"other\"\n", Path::new("t")).expect("file");
    let s = Settings::merge(&flag, f, &Defaults::default()).expect("ok");
    assert_eq!(
        s.node_command,
        Some(vec!["svc".to_owned(), "--port-from-fd".to_owned()])
    );
}

#[test]
fn budgets_and_admission_read_from_the_file_and_the_flags() {
    let s = parse(
        "max-inflight = 8\noverload = \"refuse\"\nlink-buffer-budget = 20000000\nnode-buffer-budget = 30000000\nmax-clients-per-ip = 4\n",
    )
    .expect("valid");
    assert_eq!(
        (
            s.max_inflight,
            s.overload,
            s.link_buffer_budget,
            s.node_buffer_budget,
            s.max_clients_per_ip
        ),
        (8, Overload::Refuse, 20_000_000, 30_000_000, Some(4))
    );
    let d = parse("").expect("defaults");
    assert_eq!(
        (
            d.max_inflight,
            d.overload,
            d.link_buffer_budget,
            d.node_buffer_budget,
            d.max_clients_per_ip
        ),
        (1024, Overload::Wait, 64 << 20, 256 << 20, None)
    );
    let f = FileConfig::parse(
        "max-inflight = 8\noverload = \"refuse\"\nnode-buffer-budget = 30000000\n",
        Path::new("t"),
    )
    .expect("file");
    let args = Overrides {
        max_inflight: Some(3),
        overload: Some(Overload::Wait),
        link_buffer_budget: Some(17 << 20),
        node_buffer_budget: Some(40 << 20),
        max_clients_per_ip: Some(2),
        ..Overrides::default()
    };
    let s = Settings::merge(&args, f, &Defaults::default()).expect("valid");
    assert_eq!(
        (
            s.max_inflight,
            s.overload,
            s.link_buffer_budget,
            s.node_buffer_budget,
            s.max_clients_per_ip
        ),
        (3, Overload::Wait, 17 << 20, 40 << 20, Some(2))
    );
}

#[test]
fn bad_budgets_and_admission_name_the_key() {
    assert!(err("max-inflight = 0\n").starts_with("max-inflight:"));
    let e = err("max-inflight = -1\n");
    assert!(e.contains("max-inflight"), "{e}");
    let e = err("overload = \"drop\"\n");
    assert!(
        e.starts_with("overload:") && e.contains("wait, refuse"),
        "{e}"
    );
    let e = err("link-buffer-budget = 1000\n");
    assert!(
        e.starts_with("link-buffer-budget:") && e.contains("max-message"),
        "{e}"
    );
    let e = err("max-message = 2048\nnode-buffer-budget = 1024\n");
    assert!(e.starts_with("node-buffer-budget:"), "{e}");
    assert!(err("max-clients-per-ip = 0\n").starts_with("max-clients-per-ip:"));
    let e = err("max-clients-per-ip = \"many\"\n");
    assert!(e.contains("max-clients-per-ip"), "{e}");
    // A larger max-message raises the budgets' defaults with it.
    let s = parse("max-message = 300000000\n").expect("valid");
    assert_eq!(s.link_buffer_budget, 300_000_000);
    assert_eq!(s.node_buffer_budget, 300_000_000);
}

#[test]
fn a_read_error_names_the_file_once() {
    let e = Settings::resolve(
        &Overrides {
            config: Some(PathBuf::from("/nonexistent/vole.toml")),
            ..Overrides::default()
        },
        &Defaults::default(),
    )
    .expect_err("missing file");
    assert_eq!(e.to_string(), "cannot read /nonexistent/vole.toml");
    let cause = std::error::Error::source(&e).expect("a cause").to_string();
    assert!(cause.contains("No such file"), "{cause}");
}

#[test]
fn max_call_time_is_off_unless_set_and_positive() {
    let s = parse("").expect("valid");
    assert_eq!(s.max_call_time, None, "off by default");
    let s = parse("max-call-time = 2.5\n").expect("valid");
    assert_eq!(s.max_call_time, Some(Duration::from_millis(2500)));
    let f = FileConfig::parse("max-call-time = 30\n", Path::new("t")).expect("file");
    let args = Overrides {
        max_call_time: Some(1.0),
        ..Overrides::default()
    };
    let s = Settings::merge(&args, f, &Defaults::default()).expect("valid");
    assert_eq!(
        s.max_call_time,
        Some(Duration::from_secs(1)),
        "the flag wins"
    );
    assert!(err("max-call-time = 0\n").starts_with("max-call-time:"));
    assert!(err("max-call-time = -3\n").starts_with("max-call-time:"));
}
