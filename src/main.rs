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
            execrelay::logging::say(format_args!("execrelay: {error}"));
            return ExitCode::from(2);
        }
    };
    if let Command::Config {
        action: ConfigAction::Check,
    } = &cli.command
    {
        println!("ok");
        return ExitCode::SUCCESS;
    }
    execrelay::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            execrelay::logging::say(format_args!(
                "execrelay: cannot start the async runtime: {error}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run { ready_file } => execrelay::relay::run(config, ready_file.clone()).await,
            Command::Chat(args) => cli::chat(&config, args).await,
            Command::Jobs(args) => cli::jobs(&config, args).await,
            Command::Outbox(args) => cli::outbox(&config, args).await,
            Command::Notify {
                text,
                session,
                mode,
                client,
            } => cli::notify(&config, client, text, session.as_deref(), mode).await,
            Command::Config { .. } | Command::Supervise { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            execrelay::logging::say(format_args!("execrelay: {error:#}"));
            ExitCode::FAILURE
        }
    }
}
