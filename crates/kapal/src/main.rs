//! The `kapal` binary: CLI and wiring only.

mod cli;

use clap::Parser;

/// jemalloc: the API server and controllers allocate and free many JSON buffers of every size;
/// glibc's allocator fragments under that (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli);
    // One crypto provider for the whole process (DESIGN.md §9).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match &cli.command {
        // A sidecar sizes its runtime to the CPUs it is given.
        cli::Command::Proxy(args) => args.runtime(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
