//! The service a host runs, as the command line sees it: its name, its
//! defaults, how its `[service]` settings are checked, and how a node makes
//! its gateway factory. [`crate::Host`] builds one from the user's types;
//! the serve, node and admin commands take it.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use vole_link::{LinkInfo, Object};
use vole_node::process::{InitError, InitFuture, NodeInit, NodeStart};
use vole_node::GatewayFactory;

use crate::settings::Defaults;

/// What a service's per-node init gets.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Init<C> {
    /// The service's own settings: the `[service]` table of the settings
    /// file, deserialized (from an empty table when the file has none, so
    /// `#[serde(default)]` fields work without one).
    pub settings: C,
    /// The node's id (0 in one-process mode).
    pub node_id: u32,
}

/// How a service checks its settings and makes what a node serves.
trait Spec: Send + Sync + 'static {
    /// Checks the `[service]` table (serve start, reload, `config check`).
    fn check(&self, table: Option<&toml::Table>) -> Result<(), String>;
    /// Makes a node's gateway factory (the table arrives as TOML text).
    fn init(self: Arc<Self>, start: NodeStart) -> InitFuture;
}

/// A service with no settings and no init: a factory.
struct Plain {
    factory: GatewayFactory,
}

impl Spec for Plain {
    fn check(&self, table: Option<&toml::Table>) -> Result<(), String> {
        match table {
            Some(t) if !t.is_empty() => {
                Err("service: this service takes no [service] settings".to_owned())
            }
            _ => Ok(()),
        }
    }

    fn init(self: Arc<Self>, _start: NodeStart) -> InitFuture {
        Box::pin(std::future::ready(Ok(self.factory.clone())))
    }
}

/// A service with typed settings `C`, an async init making its state `S`,
/// and a factory that gets the state.
struct Typed<C, S, I, F> {
    init: I,
    factory: Arc<F>,
    _types: PhantomData<fn() -> (C, S)>,
}

/// Deserializes the `[service]` table; errors name the key as the file
/// spells it (`service.pool-size: invalid type ...`).
fn parse_table<C: DeserializeOwned>(table: Option<&toml::Table>) -> Result<C, String> {
    let value = toml::Value::Table(table.cloned().unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.trim();
        if path == "." || path.is_empty() {
            format!("service: {inner}")
        } else {
            format!("service.{path}: {inner}")
        }
    })
}

impl<C, S, E, I, Fut, F> Spec for Typed<C, S, I, F>
where
    C: DeserializeOwned + Send + 'static,
    S: Send + Sync + 'static,
    E: Display + Send + 'static,
    I: Fn(Init<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    F: Fn(&Arc<S>, &LinkInfo) -> Arc<dyn Object> + Send + Sync + 'static,
{
    fn check(&self, table: Option<&toml::Table>) -> Result<(), String> {
        parse_table::<C>(table).map(drop)
    }

    fn init(self: Arc<Self>, start: NodeStart) -> InitFuture {
        let table = match start.service.as_deref().map(toml::from_str::<toml::Table>) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                return Box::pin(std::future::ready(Err(InitError::Config(format!(
                    "service: {e}"
                )))))
            }
        };
        let settings = match parse_table::<C>(table.as_ref()) {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(InitError::Config(e)))),
        };
        let made = (self.init)(Init {
            settings,
            node_id: start.node_id,
        });
        let factory = self.factory.clone();
        Box::pin(async move {
            let state = Arc::new(
                made.await
                    .map_err(|e| InitError::Failed(format!("{e:#}")))?,
            );
            let gateway: GatewayFactory = Arc::new(move |info: &LinkInfo| factory(&state, info));
            Ok(gateway)
        })
    }
}

/// A service as the host runs it.
#[derive(Clone)]
pub struct HostedService {
    /// The service's name: the program name in help and logs, node process
    /// names (`<name>-node-<id>`), the default state directory, the metrics
    /// label.
    pub name: String,
    /// The version `--version` prints.
    pub version: String,
    /// One line saying what the service is, for `--help`.
    pub about: String,
    /// Defaults under the settings file and the command line.
    pub defaults: Defaults,
    /// The host's own authorizer ([`crate::Host::authorize`]), asked in
    /// every serving process after the settings' allow lists.
    pub authorizer: Option<vole_node::Authorizer>,
    spec: Arc<dyn Spec>,
}

impl std::fmt::Debug for HostedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedService")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("defaults", &self.defaults)
            .field("authorizer", &self.authorizer.is_some())
            .finish_non_exhaustive()
    }
}

impl HostedService {
    fn with_spec(name: String, spec: Arc<dyn Spec>) -> Self {
        let defaults = Defaults {
            state_dir: vole_transport::tls::state_dir_named(&name),
            ..Defaults::default()
        };
        HostedService {
            about: format!("{name}: a Versile-protocol service hosted by vole"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            name,
            defaults,
            authorizer: None,
            spec,
        }
    }

    /// A service whose gateway comes from `factory`, with no settings of
    /// its own and no init.
    pub fn plain(name: impl Into<String>, factory: GatewayFactory) -> Self {
        HostedService::with_spec(name.into(), Arc::new(Plain { factory }))
    }

    /// A service with typed `[service]` settings, a per-node async init
    /// making its state, and a factory that uses the state.
    pub fn typed<C, S, E, I, Fut, F>(name: impl Into<String>, init: I, factory: F) -> Self
    where
        C: DeserializeOwned + Send + 'static,
        S: Send + Sync + 'static,
        E: Display + Send + 'static,
        I: Fn(Init<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        F: Fn(&Arc<S>, &LinkInfo) -> Arc<dyn Object> + Send + Sync + 'static,
    {
        let spec = Typed {
            init,
            factory: Arc::new(factory),
            _types: PhantomData,
        };
        HostedService::with_spec(name.into(), Arc::new(spec))
    }

    /// Checks the service's own settings (the `[service]` table).
    pub fn check(&self, table: Option<&toml::Table>) -> Result<(), String> {
        self.spec.check(table)
    }

    /// What a node runs once its configuration arrives.
    pub fn node_init(&self) -> NodeInit {
        let spec = self.spec.clone();
        Box::new(move |start| spec.init(start))
    }

    /// The authorizer of a serving process: the settings' allow lists (if
    /// set), then the host's own (if any); both must serve a client.
    pub fn authorizer(
        &self,
        access: Option<&vole_control::control::AccessRules>,
    ) -> Option<vole_node::Authorizer> {
        vole_node::auth::all_of([
            access.map(|rules| {
                Arc::new(vole_node::AllowList::new(rules.clone())) as vole_node::Authorizer
            }),
            self.authorizer.clone(),
        ])
    }

    /// The node process name for node `id`: `<name>-node-<id>`.
    pub fn node_name(&self, id: u32) -> String {
        format!("{}-node-{id}", self.name)
    }
}

/// The `[service]` table as the TOML text nodes get.
pub fn table_text(table: Option<&toml::Table>) -> Option<String> {
    table.map(|t| toml::to_string(t).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vole_link::publish::Published;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Conf {
        greeting: String,
        #[serde(default)]
        pool_size: u32,
    }

    fn typed() -> HostedService {
        HostedService::typed(
            "greeter",
            |init: Init<Conf>| async move {
                if init.settings.greeting == "fail" {
                    return Err("the database does not answer");
                }
                Ok(format!(
                    "{} from node {} (pool {})",
                    init.settings.greeting, init.node_id, init.settings.pool_size
                ))
            },
            |state: &Arc<String>, _info: &LinkInfo| {
                Published::new(state.as_str().to_owned()).into_object()
            },
        )
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn settings_errors_name_the_key() {
        let s = typed();
        assert_eq!(s.check(Some(&table("greeting = \"hi\"\n"))), Ok(()));
        let e = s.check(None).expect_err("greeting is required");
        assert!(e.starts_with("service: missing field `greeting`"), "{e}");
        let e = s
            .check(Some(&table("greeting = \"hi\"\npool-size = \"x\"\n")))
            .expect_err("wrong type");
        assert!(e.starts_with("service.pool-size: invalid type"), "{e}");
        let e = s
            .check(Some(&table("greeting = \"hi\"\ncolour = 1\n")))
            .expect_err("unknown key");
        assert!(e.contains("colour"), "{e}");
        let plain = HostedService::plain(
            "demo",
            Arc::new(|_: &LinkInfo| Published::new("D").into_object()),
        );
        assert_eq!(plain.check(None), Ok(()));
        assert!(plain.check(Some(&table("x = 1\n"))).is_err());
    }

    fn start(text: Option<&str>) -> NodeStart {
        NodeStart {
            node_id: 3,
            service: text.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn a_node_s_init_makes_its_state_and_the_factory_uses_it() {
        let s = typed();
        let factory = (s.node_init())(start(Some("greeting = \"hello\"\n")))
            .await
            .expect("init");
        let gateway = factory(&LinkInfo::default());
        assert_eq!(gateway.type_name(), "hello from node 3 (pool 0)");
    }

    #[tokio::test]
    async fn bad_settings_are_a_config_error_and_a_failed_init_is_not() {
        let s = typed();
        let bad = (s.node_init())(start(Some("pool-size = 2\n"))).await;
        assert!(matches!(bad, Err(InitError::Config(e)) if e.contains("greeting")));
        let garbled = (s.node_init())(start(Some("= nonsense"))).await;
        assert!(matches!(garbled, Err(InitError::Config(_))));
        let failed = (s.node_init())(start(Some("greeting = \"fail\"\n"))).await;
        assert_eq!(
            failed.err(),
            Some(InitError::Failed("the database does not answer".to_owned()))
        );
    }

    #[test]
    fn names_follow_the_service() {
        let s = typed();
        assert_eq!(s.node_name(2), "greeter-node-2");
        assert_eq!(s.defaults.port, 4433);
        assert!(
            s.defaults.state_dir.ends_with("greeter")
                || std::env::var_os("VOLE_STATE_DIR").is_some()
        );
    }
}
