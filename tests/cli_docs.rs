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
