//! `vole bench`: placeholder, replaced by the load generator.

use clap::Args;

/// `vole bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> Result<(), crate::cli::exit::Failure> {
    Err(crate::cli::exit::Failure::usage(anyhow::anyhow!(
        "not built yet"
    )))
}
