//! The `kubectl-vault` binary: parse, set up output, run, map the result to an exit code.

use clap::Parser;
use kubectl_vault::cli::Cli;
use kubectl_vault::cmd::{self, Exit};
use kubectl_vault::output::{log, Printer};
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
    log::init(
        cli.global.verbose,
        cli.global.log_format,
        cli.global.no_progress,
    );
    let _failpoints = fail::FailScenario::setup();
    let printer = Printer::new(cli.global.output);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("could not start the async runtime: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    match runtime.block_on(cmd::run(cli, &printer)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let chain: Vec<String> = failure
                .error
                .chain()
                .skip(1)
                .map(ToString::to_string)
                .collect();
            tracing::error!("{}", failure.error);
            for cause in chain {
                tracing::error!("  Caused by: {cause}");
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}
