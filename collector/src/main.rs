//! The `vigil-collector` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_collector::config::{Config, DEFAULT_CONFIG};

/// Vigil's OpenTelemetry collector: OTLP in over gRPC and HTTP, processed, exported.
#[derive(Parser)]
#[command(name = "vigil-collector", version, about)]
struct Cli {
    /// Config file (YAML). Without it the embedded default config is used (see `print-default-config`).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file and print every problem with its line and column; exit 0 when it is valid.
    Validate {
        /// The config file (the same as `--config FILE`).
        file: Option<PathBuf>,
    },
    /// Print the embedded default config.
    PrintDefaultConfig,
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string()),
        None => Config::default_config().map_err(|e| e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Some(Command::Validate { file }) => match load(file.as_ref().or(cli.config.as_ref())) {
            Ok(_) => {
                let name = file
                    .as_ref()
                    .or(cli.config.as_ref())
                    .map_or("<default>".into(), |p| p.display().to_string());
                println!("{name}: valid");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        None => run(cli.config.as_ref()),
    }
}

fn run(path: Option<&PathBuf>) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let _logs = match vigil_collector::telemetry::init_logs(&config.service.telemetry.logs) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match vigil_collector::service::start(config).await {
            Ok(running) => running,
            Err(e) => {
                tracing::error!(error = %e, "collector failed to start");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down: no longer accepting data, draining pipelines");
        let report = running.shutdown().await;
        if report.total() == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
