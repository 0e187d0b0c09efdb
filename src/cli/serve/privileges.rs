//! Who the nodes run as: the user and group the settings name, checked
//! (they must exist, and root only with `allow-root-nodes`) by `serve`
//! before it writes anything, by `config check`, and by the controller.

use crate::cli::exit::Failure;
use crate::settings::Settings;

/// The user and group nodes run as: the configured ones; as root with none
/// configured, `nobody` (nodes never run as root unless
/// `allow-root-nodes` says so).
pub fn node_user(s: &Settings) -> Result<Option<(u32, u32)>, Failure> {
    use nix::unistd::{Group, User};
    let lookup_user = |name: &str| -> Result<User, Failure> {
        User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| Failure::usage(anyhow::anyhow!("user: no user named {name:?}")))
    };
    let root = nix::unistd::geteuid().is_root();
    let user = match (&s.user, root, s.allow_root_nodes) {
        (Some(name), _, _) => Some(lookup_user(name)?),
        (None, true, false) => Some(lookup_user("nobody")?),
        (None, _, _) => None,
    };
    // Nodes are non-dumpable (their memory holds the TLS key), but a uid
    // other daemons share still lets those signal the nodes and use
    // whatever files the nodes can.
    if user.as_ref().is_some_and(|u| u.name == "nobody") {
        let (why, or_root) = if s.user.is_none() {
            (
                "running as root with no `user`: nodes run as user nobody",
                " (or `allow-root-nodes` to keep root)",
            )
        } else {
            ("nodes run as user nobody", "")
        };
        tracing::warn!("{why}, a uid other services share (they can signal the nodes and use the nodes' files); set `user` to a dedicated user: a `vole` system user, or systemd's DynamicUser=yes{or_root}");
    }
    let Some(user) = user else {
        if let Some(g) = &s.group {
            return Err(Failure::usage(anyhow::anyhow!(
                "group: {g:?} given without a user"
            )));
        }
        return Ok(None);
    };
    let gid = match &s.group {
        Some(name) => Group::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| Failure::usage(anyhow::anyhow!("group: no group named {name:?}")))?
            .gid
            .as_raw(),
        None => user.gid.as_raw(),
    };
    if user.uid.is_root() && !s.allow_root_nodes {
        return Err(Failure::usage(anyhow::anyhow!(
            "user: refusing to run nodes as root without allow-root-nodes"
        )));
    }
    if !root && user.uid != nix::unistd::geteuid() {
        return Err(Failure::usage(anyhow::anyhow!(
            "user: only root can run nodes as another user"
        )));
    }
    Ok(Some((user.uid.as_raw(), gid)))
}
