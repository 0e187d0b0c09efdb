//! `vole call` and `vole describe`.
//!
//! The argument doc comments are `--help` texts: `[:port]` is optional
//! syntax, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::time::Duration;

use anyhow::Context as _;
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
    /// Arguments: each is parsed as JSON if it can be, otherwise taken as a string.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vole describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// vop://host[:port]/path/
    pub uri: String,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

async fn connect_and_resolve(uri: &str, client: &ClientArgs) -> Result<(Vri, Resolved), Failure> {
    let vri: Vri = uri
        .parse()
        .map_err(|e| Failure::usage(anyhow::Error::new(e).context(format!("bad uri {uri:?}"))))?;
    let config = client_config(client, &vri.host.to_string()).map_err(Failure::usage)?;
    let resolved = resolve::resolve(uri, &config)
        .await
        .with_context(|| format!("cannot resolve {uri}"))?;
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

/// `vole call`: prints the result as one line of JSON.
pub async fn call(args: CallArgs) -> Result<(), Failure> {
    let call_args: Vec<Value> = args
        .args
        .iter()
        .map(|a| parse_arg(a))
        .collect::<Result<_, _>>()?;
    if args.method.is_none() && !call_args.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "arguments given without a method"
        )));
    }
    let limit = call_timeout(&args.client);
    let work = async {
        let (vri, resolved) = connect_and_resolve(&args.uri, &args.client).await?;
        let value = match &args.method {
            None => resolved.value,
            Some(method) => {
                let Entity::Ref(ObjectRef::Remote(target)) = &resolved.value else {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "{} resolves to a value (the query result), not an object; drop the method or the query",
                        vri
                    )));
                };
                // The call has its own deadline: past it the service is
                // told to cancel it, and the exit code says so.
                let target = target.with_timeout(limit);
                let outcome = match method.strip_prefix("meta.") {
                    Some(meta) if !meta.is_empty() => target.call_meta(meta, call_args).await,
                    _ => target.call(method, call_args).await,
                };
                outcome.with_context(|| format!("{method}() failed"))?
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

/// `vole describe`: the object's doc and its methods with their
/// signatures (where the service says them) and docs.
pub async fn describe(args: DescribeArgs) -> Result<(), Failure> {
    let limit = call_timeout(&args.client);
    let work = async {
        let (vri, resolved) = connect_and_resolve(&args.uri, &args.client).await?;
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
