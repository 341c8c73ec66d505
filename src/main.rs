//! The `kubectl-vault` binary: parse, set up output, run, map the result to an exit code.

use clap::Parser;
use kubectl_vault::cli::Cli;
use kubectl_vault::cmd::{self, Exit, Failure};
use kubectl_vault::output::log::{self, Settle};
use kubectl_vault::output::Printer;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors are refusals (exit 1), never clap's 2, which means "re-run".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(usage) => {
            let _ = usage.print();
            return ExitCode::from(if usage.use_stderr() {
                Exit::Refused as u8
            } else {
                0
            });
        }
    };
    // Two rustls providers are compiled in (object_store brings aws-lc-rs); pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let g = &cli.global;
    log::init(g.verbose, g.log_format, g.no_progress);
    let _failpoints = fail::FailScenario::setup();
    let printer = Printer::new(cli.global.output);
    // One thread: the work is I/O over a few connections, and hand-offs
    // between worker threads cost more than they give. A 128 MiB snapshot
    // save through port-forward took 576–627 ms and 0.34–0.38 s of CPU on
    // one thread, against 646–845 ms and 0.46–0.55 s on the multi-threaded
    // runtime (release build, 2 cores, same sandbox pod, 5 runs each).
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cmd::run(cli, &printer)),
        Err(e) => Err(Failure::failed(anyhow::anyhow!(
            "could not start the async runtime: {e}"
        ))),
    };
    match result {
        Ok(()) => {
            log::settle(Settle::Done);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            log::settle(Settle::Failed);
            tracing::error!("{}", failure.error);
            for cause in failure.error.chain().skip(1) {
                tracing::error!("  Caused by: {cause}");
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}
