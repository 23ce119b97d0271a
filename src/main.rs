//! `execrelay`: parses the command line, loads the config, and hands over.

use std::process::ExitCode;

use clap::Parser;
use execrelay::cli::{self, Cli, Command, ConfigAction};
use execrelay::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The supervisor is its own small program: no runtime, no config, no logging setup.
    if let Some(args) = cli::supervise_args(&cli.command) {
        return ExitCode::from(execrelay::supervisor::run(&args) as u8);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("execrelay: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config {
        action: ConfigAction::Check,
    } = &cli.command
    {
        return match cli::write_line("ok") {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("execrelay: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; plain text for files and journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("execrelay: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run { ready_file } => execrelay::relay::run(config, ready_file.clone()).await,
            Command::Config { .. } | Command::Supervise { .. } => Ok(()),
            client => {
                let settings = cli::ClientSettings {
                    addr: config.http.listen,
                    api_token: config.http.api_token.clone(),
                };
                cli::run_client(&settings, client).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("execrelay: {error:#}");
            ExitCode::FAILURE
        }
    }
}
