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
    /// Ask a running collector's `health_check` extension whether it is ready: exit 0 when `GET /readyz`
    /// answers 200, else print its answer and exit 1. For container health checks in images without curl.
    Health {
        /// The extension's `host:port`.
        #[arg(long, default_value = "127.0.0.1:13133")]
        endpoint: String,
        /// The path to ask (`/readyz`, or `/healthz` for liveness).
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// Alerting and recording rule files: check, test, export.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Persistent sending queues (`sending_queue.storage`): inspect and repair offline.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Check a queue directory (a `storage.directory`, or one exporter's queue in it): segments, undelivered
    /// items, damage, items lost. Exit 0 when clean (or repaired), 1 when damage remains, 2 on errors.
    Check {
        /// The directory.
        dir: PathBuf,
        /// Move damaged bytes to `quarantine/` and rewrite the segments without them (the collector using
        /// the queue must be stopped).
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check rule files (Prometheus format or Vigil's `alerts:` format); every error with file, line and column.
    Check {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run `promtool test rules` test files.
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write rule files as one Prometheus rule file on stdout (`promtool check rules` accepts it).
    Export {
        /// Output format; `prometheus` is the one there is.
        #[arg(long, default_value = "prometheus")]
        format: String,
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn load_rules(files: &[PathBuf]) -> Result<Vec<vigil_collector::alert::rules::Group>, String> {
    let env = |name: &str| std::env::var(name).ok();
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => match vigil_collector::alert::rules::load(file, &text, &env) {
                Ok(loaded) => groups.extend(loaded),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(format!("{}: {e}", file.display())),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors.join("\n"))
    }
}

fn rules(command: RulesCommand) -> ExitCode {
    match command {
        RulesCommand::Check { files } => match load_rules(&files) {
            Ok(groups) => {
                for group in &groups {
                    let alerts = group
                        .rules
                        .iter()
                        .filter(|r| {
                            matches!(
                                r.kind,
                                vigil_collector::alert::rules::RuleKind::Alert { .. }
                            )
                        })
                        .count();
                    println!(
                        "{}: group {:?}: {} rules ({alerts} alerting, {} recording)",
                        group.file,
                        group.name,
                        group.rules.len(),
                        group.rules.len() - alerts
                    );
                }
                println!("SUCCESS");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("FAILED");
                ExitCode::FAILURE
            }
        },
        RulesCommand::Export { format, files } => {
            if format != "prometheus" {
                eprintln!("--format `{format}` is not known; the one format is `prometheus`");
                return ExitCode::FAILURE;
            }
            match load_rules(&files) {
                Ok(groups) => {
                    print!(
                        "{}",
                        vigil_collector::alert::rules::to_prometheus_yaml(&groups)
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        RulesCommand::Test { files } => {
            let mut failed = false;
            for file in &files {
                println!("Unit Testing:  {}", file.display());
                match vigil_collector::alert::unittest::run(file) {
                    Ok(outcome) if outcome.failures.is_empty() => println!("  SUCCESS\n"),
                    Ok(outcome) => {
                        failed = true;
                        println!("  FAILED:");
                        for failure in outcome.failures {
                            println!("{failure}");
                        }
                        println!();
                    }
                    Err(error) => {
                        failed = true;
                        println!("  FAILED:\n    {error}\n");
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
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
        Some(Command::Rules { command }) => rules(command),
        Some(Command::Queue {
            command: QueueCommand::Check { dir, repair },
        }) => match vigil_collector::pipeline::persistent::check::check_all(&dir, repair) {
            Ok(reports) if reports.is_empty() => {
                eprintln!("{}: no persistent queue here", dir.display());
                ExitCode::from(2)
            }
            Ok(reports) => {
                for report in &reports {
                    print!("{report}");
                }
                if reports.iter().all(|r| r.is_clean() || r.repaired) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Health { endpoint, path }) => {
            match vigil_collector::extension::health_check::probe(&endpoint, &path) {
                Ok((200, _)) => ExitCode::SUCCESS,
                Ok((status, body)) => {
                    eprintln!("http://{endpoint}{path} answered {status}: {}", body.trim());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("http://{endpoint}{path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
