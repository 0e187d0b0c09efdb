//! `kv`: a key-value service as a full vole host.
//!
//! ```sh
//! cargo build --release -p vole-example-kv
//! kv=target/release/kv
//! $kv serve --plain --nodes 2 --config examples/kv/kv.toml   # controller + kv-node-0, kv-node-1
//! $kv status                                                # the nodes
//! target/release/kv-client --plain vop://localhost:4455/ demo
//! $kv reload            # re-reads kv.toml ([service] too), replaces nodes one by one
//! $kv upgrade           # puts a rebuilt binary live (controller and nodes)
//! $kv stop
//! ```
//!
//! Everything `vole serve` takes works here (`kv serve --help`), plus the
//! `[service]` table of [`vole_example_kv::Settings`]. Under systemd, see
//! `examples/kv/kv.service`.

use std::process::ExitCode;
use std::sync::Arc;

use vole::host::Init;
use vole::link::LinkInfo;
use vole_example_kv::{KeyValue, Settings, Store};

fn main() -> ExitCode {
    vole::Host::with_init(
        "kv",
        |init: Init<Settings>| Store::open(init),
        |store: &Arc<Store>, _link: &LinkInfo| KeyValue::new(store.clone()).into_object(),
    )
    .version(env!("CARGO_PKG_VERSION"))
    .about("kv: a key-value service hosted by vole (an example)")
    .default_port(4455)
    .main()
}
