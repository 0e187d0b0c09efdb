//! `vole completions SHELL` and `vole man`: generated from the command line
//! itself, they cover every subcommand (the host's and the program's own,
//! such as `call` and `describe`), and a bad shell is a usage error.

use std::process::Command;

const VOLE: &str = env!("CARGO_BIN_EXE_vole");

fn vole(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(VOLE).args(args).output().expect("vole runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_cover_every_subcommand_in_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = vole(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        for word in [
            "serve", "status", "reload", "upgrade", "call", "describe", "balance",
        ] {
            assert!(out.contains(word), "{shell} completions lack {word:?}");
        }
    }
    let (_, bash, _) = vole(&["completions", "bash"]);
    assert!(bash.contains("_vole()"), "{bash}");
    // Internal subcommands are not offered (as `bash` `vole,exec-node)`,
    // `zsh` `(exec-node)`, `fish` `-a "exec-node"`); `bench-server` is
    // still named in a help text.
    for shell in ["bash", "zsh", "fish"] {
        let (_, out, _) = vole(&["completions", shell]);
        assert!(!out.contains("exec-node"), "{shell} offers exec-node");
        assert!(!out.contains("vole,node)"), "{shell} offers node");
        for offered in ["bench-server)", "\"bench-server\""] {
            assert!(!out.contains(offered), "{shell} offers bench-server");
        }
    }
}

#[test]
fn the_man_page_is_roff_for_the_whole_command() {
    let (code, out, err) = vole(&["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(".TH vole 1"), "{out}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(out.contains(section), "no {section}");
    }
    assert!(out.contains("describe"), "the program's own subcommands");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let (code, out, err) = vole(&["completions", "tcsh"]);
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn serve_help_groups_its_options_under_headings() {
    let (code, out, err) = vole(&["serve", "--help"]);
    assert_eq!(code, Some(0), "{err}");
    for (heading, option) in [
        ("Daemon and files:", "--pidfile"),
        ("Network:", "--keep-alive"),
        ("TLS:", "--tls-cert"),
        ("Nodes and balancing:", "--balance"),
        ("Calls and budgets:", "--max-inflight"),
        ("Supervision:", "--heartbeat-timeout"),
        ("Logging and metrics:", "--metrics"),
    ] {
        let section_start = out
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("no heading {heading:?}:\n{out}"));
        let next = out[section_start + 2..]
            .find("\n\n")
            .map_or(out.len(), |n| section_start + 2 + n);
        assert!(
            out[section_start..next].contains(option),
            "{option} is not under {heading:?}"
        );
    }
}

/// Defaults come from the one place the settings read them from, shown
/// as clap shows its own.
#[test]
fn serve_help_shows_the_defaults_the_settings_use() {
    let (code, out, err) = vole(&["serve", "--help"]);
    assert_eq!(code, Some(0), "{err}");
    for (option, default) in [
        ("--keep-alive", "30"),
        ("--handshake-timeout", "10"),
        ("--max-message", "16777216"),
        ("--overload", "wait"),
        ("--log-level", "info"),
        ("--restart-period", "60"),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(option))
            .unwrap_or_else(|| panic!("no {option}:\n{out}"));
        assert!(
            line.ends_with(&format!("[default: {default}]")),
            "{option}: {line}"
        );
    }
}
