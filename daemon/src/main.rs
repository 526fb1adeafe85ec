//! pierd's entry point: parse the command line, build the configuration, serve.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use pierd::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The helper needs no configuration; it must not fail on one.
    if let Some(Command::PinNamespaces(request)) = &cli.command {
        return match pierd::pinns::pin(request) {
            Ok(pinned) => match pinned.infra_pid {
                // The daemon reads this line to learn which process holds the pod's PID namespace.
                Some(pid) => match writeln!(std::io::stdout(), "infra-pid {pid}") {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e),
                },
                None => ExitCode::SUCCESS,
            },
            Err(e) => fail(&e),
        };
    }
    let config = match cli.flags.effective_config() {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    match cli.command {
        Some(Command::Config) => match toml::to_string_pretty(&config) {
            Ok(text) => match std::io::stdout().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e),
        },
        Some(Command::Check) => check(&config),
        Some(Command::PinNamespaces(_)) => ExitCode::SUCCESS,
        None => {
            pierd::memory::limit_arenas();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return fail(&e),
            };
            // The OTLP exporter's gRPC client lives on this runtime.
            let tracer = {
                let _inside = runtime.enter();
                match pierd::telemetry::Tracer::start(&config.tracing) {
                    Ok(tracer) => tracer,
                    Err(e) => return fail(&e),
                }
            };
            pierd::logging::init(&config.log, tracer.as_ref());
            #[cfg(feature = "failpoints")]
            let _failpoints = pierd::failpoint::arm_from_env();
            let served = runtime.block_on(pierd::server::serve(config));
            if let Some(tracer) = tracer {
                let _inside = runtime.enter();
                tracer.shutdown();
            }
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "pierd failed");
                    fail(&e)
                }
            }
        }
    }
}

/// `pierd check`: disagreements on stdout, one a line.
fn check(config: &pierd::config::Config) -> ExitCode {
    let report = match pierd::check::run(config) {
        Ok(report) => report,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "pierd check: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    for line in &report.disagreements {
        text.push_str(line);
        text.push('\n');
    }
    let summary = if report.disagreements.is_empty() {
        "agree"
    } else {
        "disagree"
    };
    text.push_str(&format!(
        "{} sandboxes, {} containers: database, run root and kernel {summary}\n",
        report.sandboxes, report.containers
    ));
    if let Err(e) = out.write_all(text.as_bytes()) {
        return fail(&e);
    }
    if report.disagreements.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Startup failures go to stderr as one line, whether or not logging is up.
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "pierd: {error}");
    ExitCode::FAILURE
}
