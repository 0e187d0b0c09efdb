//! `vole call` and `vole describe`.
//!
//! The argument doc comments are `--help` texts: `[:port]` is optional
//! syntax, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use vole_link::pool::Pool;
use vole_link::resolve::{self, Resolved};
use vole_link::uri::Vri;
use vole_link::{Entity, ObjectRef, Value};
use vole_transport::{Owner, WireRef};

use clap::Args;

use super::exit::Failure;
use super::trust::{client_config, ClientArgs};

/// `vole call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// vop://host[:port]/path/[name[?args]]
    pub uri: String,
    /// Method to call on the resolved object; `meta.NAME` sends a meta call
    /// (`meta.ping`, `meta.methods`, `meta.doc`).
    pub method: Option<String>,
    /// Arguments: each is parsed as JSON if it can be, otherwise taken as a
    /// string (with --json, each must be JSON). Flags are flags wherever
    /// they stand; after `--` everything is an argument (`-- --not-a-flag`).
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// Every argument must be JSON (a string is written "\"text\""); one
    /// that is not is a usage error.
    #[arg(long)]
    pub json: bool,
    /// The hosts of the service (IP:PORT, comma-separated or repeated):
    /// tried in turn until one connects; the URI still gives the path and
    /// the name TLS verifies.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub endpoints: Vec<SocketAddr>,
    /// Find the hosts by the DNS SRV records of `_vop._tcp.HOST` (a
    /// Kubernetes headless Service's port named `vop`), at the ports they
    /// give, and try them in turn.
    #[arg(long, conflicts_with = "endpoints")]
    pub srv: bool,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vole describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// vop://host[:port]/path/
    pub uri: String,
    /// The hosts of the service (IP:PORT, comma-separated or repeated):
    /// tried in turn until one connects.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub endpoints: Vec<SocketAddr>,
    /// Find the hosts by the DNS SRV records of `_vop._tcp.HOST`.
    #[arg(long, conflicts_with = "endpoints")]
    pub srv: bool,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Connects to the service `uri` names and resolves it: over the first of
/// `pool`'s hosts that connects if there is a pool (`--endpoints`), else to
/// the URI's host.
async fn connect_and_resolve(
    uri: &str,
    client: &ClientArgs,
    pool: Option<&Pool>,
) -> Result<(Vri, Resolved), Failure> {
    let vri: Vri = uri
        .parse()
        .map_err(|e| Failure::usage(anyhow::Error::new(e).context(format!("bad uri {uri:?}"))))?;
    let config = client_config(client, &vri.host.to_string()).map_err(Failure::usage)?;
    let resolving = async {
        match pool {
            None => resolve::resolve(uri, &config).await,
            Some(pool) => {
                let (link, gateway, _) = pool.connect().await?;
                match resolve::resolve_on(&gateway, &vri.path, vri.query.as_ref()).await {
                    Ok(value) => Ok(Resolved {
                        link,
                        gateway,
                        value,
                    }),
                    Err(e) => {
                        link.abort();
                        Err(e)
                    }
                }
            }
        }
    };
    let resolved = match resolving.await {
        Ok(r) => r,
        Err(e) => {
            let e = anyhow::Error::new(e);
            // Explained, the raw chain (rustls' debug output) adds nothing;
            // the exit code still comes from it.
            return Err(
                match crate::cli::trust::explain(&e, client, &vri.host.to_string()) {
                    Some(why) => Failure {
                        code: crate::cli::exit::classify(&e),
                        error: anyhow::anyhow!("cannot resolve {uri}: {why}"),
                    },
                    None => e.context(format!("cannot resolve {uri}")).into(),
                },
            );
        }
    };
    Ok((vri, resolved))
}

/// A command-line argument as an entity: JSON if it parses, else a string.
/// An integer literal of any size is an exact integer (JSON parsers would
/// round big ones to floats).
pub fn parse_arg(text: &str) -> Result<Value, Failure> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<num_bigint::BigInt>() {
            return Ok(Value::int(n));
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(json) => vole_transport::serde::to_entity(&json).map_err(|e| {
            Failure::usage(anyhow::Error::new(e).context(format!("argument {text:?}")))
        }),
        Err(_) => Ok(Value::Str(text.to_owned())),
    }
}

/// A command-line argument that must be JSON (`vole call --json`).
pub fn parse_json_arg(text: &str) -> Result<Value, Failure> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return parse_arg(text);
    }
    let json = serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "argument {text:?} is not JSON ({e}); with --json a string is written \"\\\"text\\\"\""
        ))
    })?;
    vole_transport::serde::to_entity(&json)
        .map_err(|e| Failure::usage(anyhow::Error::new(e).context(format!("argument {text:?}"))))
}

/// An entity as JSON for printing; objects become `{"object": id}`.
pub fn to_json(value: Value) -> serde_json::Value {
    let wire = value.try_map_refs(&mut |r: ObjectRef| {
        Ok::<_, std::convert::Infallible>(WireRef {
            owner: Owner::Sender,
            id: r.as_remote().map_or(0, |r| r.id()),
        })
    });
    let wire = match wire {
        Ok(w) => w,
        Err(never) => match never {},
    };
    vole_transport::serde::from_entity::<serde_json::Value, WireRef>(replace_refs(wire))
        .unwrap_or_else(|e| serde_json::Value::String(format!("<unprintable: {e}>")))
}

fn replace_refs(e: Entity<WireRef>) -> Entity<WireRef> {
    match e {
        Entity::Ref(r) => {
            vole_transport::serde::frozen_dict([(Entity::str("object"), Entity::Int(r.id))])
        }
        Entity::Tuple(items) => Entity::Tuple(items.into_iter().map(replace_refs).collect()),
        Entity::Exception(items) => {
            Entity::Exception(items.into_iter().map(replace_refs).collect())
        }
        Entity::Tagged(v, tags) => Entity::Tagged(
            Box::new(replace_refs(*v)),
            tags.into_iter().map(replace_refs).collect(),
        ),
        other => other,
    }
}

fn call_timeout(client: &ClientArgs) -> Duration {
    Duration::try_from_secs_f64(client.timeout).unwrap_or(Duration::from_secs(10))
}

/// The pool of `--endpoints` or `--srv`, if given.
async fn endpoints_pool(
    uri: &str,
    endpoints: &[SocketAddr],
    srv: bool,
    client: &ClientArgs,
) -> Result<Option<Pool>, Failure> {
    if endpoints.is_empty() && !srv {
        return Ok(None);
    }
    let vri: Vri = uri
        .parse()
        .map_err(|e| Failure::usage(anyhow::Error::new(e).context(format!("bad uri {uri:?}"))))?;
    let host = vri.host.to_string();
    let config = client_config(client, &host).map_err(Failure::usage)?;
    if srv {
        let pool = Pool::resolve_srv(&host, config).await.map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot find the hosts of {uri}"))
        })?;
        return Ok(Some(pool));
    }
    Ok(Some(Pool::with_addrs(
        &host,
        endpoints.iter().copied(),
        config,
    )))
}

/// Tries of a call that provably never ran (refused as closing or
/// overloaded, or its link closed before it was sent), each on a new link.
const CALL_TRIES: u32 = 3;

/// `vole call`: prints the result as one line of JSON.
pub async fn call(args: CallArgs) -> Result<(), Failure> {
    let call_args: Vec<Value> = args
        .args
        .iter()
        .map(|a| {
            if args.json {
                parse_json_arg(a)
            } else {
                parse_arg(a)
            }
        })
        .collect::<Result<_, _>>()?;
    if args.method.is_none() && !call_args.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "arguments given without a method"
        )));
    }
    let limit = call_timeout(&args.client);
    let work = async {
        let pool = endpoints_pool(&args.uri, &args.endpoints, args.srv, &args.client).await?;
        let mut tries = 0;
        let (resolved, value) = loop {
            tries += 1;
            let (vri, resolved) =
                connect_and_resolve(&args.uri, &args.client, pool.as_ref()).await?;
            match call_once(&vri, &resolved, args.method.as_deref(), &call_args, limit).await {
                Err(Tried::NeverRan(e)) if tries < CALL_TRIES => {
                    tracing::info!(error = %e, "the call did not run; trying again on a new link");
                    resolved.link.abort();
                }
                Err(Tried::NeverRan(e)) => {
                    let method = args.method.as_deref().unwrap_or_default();
                    return Err(anyhow::Error::new(e)
                        .context(format!("{method}() failed {tries} times"))
                        .into());
                }
                Err(Tried::Failed(f)) => return Err(f),
                Ok(value) => break (resolved, value),
            }
        };
        let json = to_json(value);
        crate::cli::out::outln!("{}", serde_json::to_string(&json).context("json")?);
        resolved.link.close().await;
        Ok(())
    };
    tokio::time::timeout(limit * 3, work)
        .await
        .map_err(|_| Failure::from(anyhow::Error::new(vole_link::Error::Timeout("the call"))))?
}

/// How one try of a call failed.
enum Tried {
    /// It never ran: it may be tried again.
    NeverRan(vole_link::Error),
    /// Any other way.
    Failed(Failure),
}

/// One try of `vole call`'s call (or, with no method, the resolved value).
async fn call_once(
    vri: &Vri,
    resolved: &Resolved,
    method: Option<&str>,
    call_args: &[Value],
    limit: Duration,
) -> Result<Value, Tried> {
    let Some(method) = method else {
        return Ok(resolved.value.clone());
    };
    let Entity::Ref(ObjectRef::Remote(target)) = &resolved.value else {
        return Err(Tried::Failed(Failure::usage(anyhow::anyhow!(
            "{} resolves to a value (the query result), not an object; drop the method or the query",
            vri
        ))));
    };
    // The call has its own deadline: past it the service is told to cancel
    // it, and the exit code says so.
    let timed = target.with_timeout(limit);
    let outcome = match method.strip_prefix("meta.") {
        Some(meta) if !meta.is_empty() => timed.call_meta(meta, call_args.to_vec()).await,
        _ => timed.call(method, call_args.to_vec()).await,
    };
    match outcome {
        Ok(v) => Ok(v),
        Err(e) if e.never_ran() => Err(Tried::NeverRan(e)),
        // VOL's call error carries no reason: ask the object what it has,
        // and say what probably went wrong.
        Err(e @ vole_link::Error::CallError) if !method.starts_with("meta.") => {
            let why = explain_call_error(target, method, call_args).await;
            let failed = format!("{method}() failed");
            Err(Tried::Failed(
                anyhow::Error::new(e)
                    .context(match why {
                        Some(why) => format!("{failed}: {why}"),
                        None => failed,
                    })
                    .into(),
            ))
        }
        Err(e) => Err(Tried::Failed(
            anyhow::Error::new(e)
                .context(format!("{method}() failed"))
                .into(),
        )),
    }
}

/// Why a call of `method` with `args` probably failed with a bare call
/// error: the object has no such method (with the closest name it has),
/// or the method's signature (where the service says it) against the
/// types given. `None` when the object says nothing useful.
async fn explain_call_error(
    target: &vole_link::RemoteObject,
    method: &str,
    args: &[Value],
) -> Option<String> {
    let methods = target.meta_methods().await.ok()?;
    if !methods.iter().any(|m| m == method) {
        return Some(match closest(method, &methods) {
            Some(near) => format!("the object has no method {method:?} (did you mean {near:?}?)"),
            None if methods.is_empty() => format!("the object has no method {method:?}"),
            None => format!(
                "the object has no method {method:?}; it has {}",
                methods.join(", ")
            ),
        });
    }
    let given: Vec<&str> = args.iter().map(type_name).collect();
    let given = format!("({})", given.join(", "));
    match target.meta_signature(method).await.ok().flatten() {
        Some(signature) => Some(format!("it takes {signature}; it was given {given}")),
        None => Some(format!(
            "the arguments {given} may not suit it (the service gives no reason)"
        )),
    }
}

/// The name among `names` closest to `name`, if one is close enough to be
/// a likely typo.
fn closest<'a>(name: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (strsim::damerau_levenshtein(name, n), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3) && *d < n.len().max(name.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

/// The Versile type name of a value, as signatures write them.
fn type_name(v: &Value) -> &'static str {
    match v {
        Entity::Int(_) | Entity::BigInt(_) => "int",
        Entity::Bool(_) => "bool",
        Entity::None => "none",
        Entity::Float(_) => "float",
        Entity::Bytes(_) => "bytes",
        Entity::Str(_) => "str",
        Entity::Tuple(_) => "tuple",
        Entity::Exception(_) => "exception",
        Entity::Tagged(..) => "tagged",
        Entity::Ref(_) => "object",
    }
}

/// `vole describe`: the object's doc and its methods with their
/// signatures (where the service says them) and docs.
pub async fn describe(args: DescribeArgs) -> Result<(), Failure> {
    let limit = call_timeout(&args.client);
    let work = async {
        let pool = endpoints_pool(&args.uri, &args.endpoints, args.srv, &args.client).await?;
        let (vri, resolved) = connect_and_resolve(&args.uri, &args.client, pool.as_ref()).await?;
        let Entity::Ref(ObjectRef::Remote(target)) = &resolved.value else {
            return Err(Failure::usage(anyhow::anyhow!(
                "{vri} resolves to a value, not an object"
            )));
        };
        let doc = target.meta_doc(None).await.context("meta.doc()")?;
        let methods = target.meta_methods().await.context("meta.methods()")?;
        crate::cli::out::outln!("{vri}");
        if let Some(doc) = doc {
            // VPy ends every doc string with a newline.
            crate::cli::out::outln!("  {}", doc.trim_end());
        }
        crate::cli::out::outln!();
        let width = methods.iter().map(String::len).max().unwrap_or(0);
        for m in &methods {
            let mdoc = target
                .meta_doc(Some(m))
                .await
                .with_context(|| format!("meta.doc({m:?})"))?;
            let mdoc = mdoc.unwrap_or_default();
            // vole services say their signatures; others (VPy) answer
            // meta.signature with an error, and keep the one-line form.
            let signature = target
                .meta_signature(m)
                .await
                .with_context(|| format!("meta.signature({m:?})"))?;
            match signature {
                Some(sig) => {
                    crate::cli::out::outln!("  {sig}");
                    for line in mdoc.trim_end().lines() {
                        crate::cli::out::outln!("      {}", line.trim());
                    }
                }
                None => crate::cli::out::outln!("  {m:width$}  {}", mdoc.trim_end()),
            }
        }
        resolved.link.close().await;
        Ok(())
    };
    tokio::time::timeout(limit * 3, work)
        .await
        .map_err(|_| Failure::from(anyhow::Error::new(vole_link::Error::Timeout("describe"))))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_method_is_a_likely_typo_or_none() {
        let names: Vec<String> = ["echo", "invoke", "raise_exception", "sleep"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(closest("ecoh", &names), Some("echo"));
        assert_eq!(closest("slep", &names), Some("sleep"));
        assert_eq!(closest("raise_exeption", &names), Some("raise_exception"));
        assert_eq!(closest("zzzzzzzz", &names), None);
        assert_eq!(closest("x", &names), None);
        assert_eq!(closest("echo", &[]), None);
    }

    #[test]
    fn values_are_named_as_signatures_write_types() {
        let given: Vec<&str> = [
            Value::Int(1),
            Value::str("a"),
            Value::Bool(true),
            Value::None,
            Value::Tuple(vec![]),
            Value::Bytes(vec![1]),
        ]
        .iter()
        .map(type_name)
        .collect();
        assert_eq!(given, ["int", "str", "bool", "none", "tuple", "bytes"]);
    }
}

#[cfg(test)]
mod arg_tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        call: CallArgs,
    }

    fn parse(args: &[&str]) -> CallArgs {
        let mut all = vec!["vole-call"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").call
    }

    #[test]
    fn flags_are_flags_wherever_they_stand_and_dash_dash_ends_them() {
        let a = parse(&["vop://h/", "echo", "--plain", "hi", "-5", "--timeout", "3"]);
        assert!(a.client.plain);
        assert_eq!(a.client.timeout, 3.0);
        assert_eq!(a.method.as_deref(), Some("echo"));
        assert_eq!(a.args, ["hi", "-5"]);
        let a = parse(&["vop://h/", "echo", "--", "--plain", "-x"]);
        assert!(!a.client.plain);
        assert_eq!(a.args, ["--plain", "-x"]);
        let a = parse(&["--json", "vop://h/", "add", "-1.5"]);
        assert!(a.json);
        assert_eq!(a.args, ["-1.5"]);
    }

    #[test]
    fn json_arguments_are_strict() {
        assert_eq!(
            parse_json_arg("\"hi\"").expect("a string"),
            Value::str("hi")
        );
        assert_eq!(parse_json_arg("42").expect("a number"), Value::Int(42));
        let big = "1".repeat(30);
        assert!(matches!(
            parse_json_arg(&big).expect("big"),
            Value::BigInt(_)
        ));
        for bad in ["hi", "[1,", "'x'"] {
            let e = parse_json_arg(bad).expect_err("not JSON");
            assert_eq!(e.code, crate::cli::exit::USAGE, "{bad}");
            assert!(e.error.to_string().contains("is not JSON"), "{}", e.error);
        }
        // Without --json a non-JSON argument is a string.
        assert_eq!(parse_arg("hi").expect("a string"), Value::str("hi"));
    }
}
