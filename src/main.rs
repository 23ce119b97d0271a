//! `execrelay`: parses the command line, loads what the subcommand needs, and hands over.

use std::process::ExitCode;

use clap::Parser;
use execrelay::config::{ClientConfig, Config, StoreConfig};
use execrelay::logging::{LogFormat, say};
use execrelay::serve::cli::{self, Cli, Command, ConfigAction};

/// What the subcommand runs, with what it loaded.
enum Work {
    Relay(Box<Config>, Option<std::path::PathBuf>),
    Client(ClientConfig),
}

/// A config that cannot be used (as `config check` and `run` both say).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The supervisor is its own small program: no runtime, no config, no logging setup.
    if let Some(args) = cli::supervise_args(&cli.command) {
        return ExitCode::from(execrelay::run::supervisor::run(&args) as u8);
    }
    let config_path = cli.config.as_deref();
    if let Command::Run { .. } = &cli.command {
        // Before anything is read: the relay's environment and memory hold its tokens.
        execrelay::run::supervisor::not_dumpable();
        execrelay::run::supervisor::no_inherited_descriptors();
    }
    let work = match &cli.command {
        Command::Config {
            action: ConfigAction::Check,
        } => return config_check(config_path),
        Command::Backup { path } => return backup(config_path, path),
        Command::Doctor { json } => return ExitCode::from(cli::doctor::run(config_path, *json)),
        Command::Run { ready_file } => match Config::load(config_path) {
            Ok(config) => Work::Relay(Box::new(config), ready_file.clone()),
            Err(error) => {
                say(format_args!("execrelay: {error}"));
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        // Clients need the address and the token only: a mistake elsewhere in the file is
        // the relay's to report.
        _ => match ClientConfig::load(config_path) {
            Ok(client) => Work::Client(client),
            Err(error) => {
                say(format_args!("execrelay: {error}"));
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
    };
    // `EXECRELAY_LOG` wins over the file; clients write text.
    let configured = match &work {
        Work::Relay(config, _) => config.log.format,
        Work::Client(_) => LogFormat::Text,
    };
    let log_format = match std::env::var(LogFormat::ENV) {
        Ok(value) => match LogFormat::parse(&value) {
            Some(format) => format,
            None => {
                say(format_args!(
                    "execrelay: {}: `{value}` is not a log format; write `text` or `json`",
                    LogFormat::ENV
                ));
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        Err(_) => configured,
    };
    let logs = execrelay::logging::init(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(format_args!(
                "execrelay: cannot start the async runtime: {error}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match work {
            Work::Relay(config, ready_file) => execrelay::relay::run(*config, ready_file).await,
            Work::Client(settings) => cli::run_client(&settings, &cli.command).await,
        }
    });
    // The last log lines first, then the verdict.
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say(format_args!("execrelay: {error:#}"));
            // An adapter's refusal is the config's, as `config check` says it.
            if error
                .downcast_ref::<execrelay::channels::ChannelRefused>()
                .is_some()
            {
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            ExitCode::FAILURE
        }
    }
}

/// Everything `run` checks before it serves, without starting anything: every problem (not
/// just the first) with its key and line, then the warnings; `ok` when it would start.
fn config_check(path: Option<&std::path::Path>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            say(format_args!("execrelay: {error}"));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let origin = config.source.as_ref().map_or_else(
        || "built-in defaults".to_string(),
        |p| p.display().to_string(),
    );
    if let Err(error) = execrelay::channels::preflight(&config) {
        say(format_args!("execrelay: {origin}: {error:#}"));
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    for warning in &config.warnings {
        say(format_args!("warning: {origin}: {warning}"));
    }
    // A closed stdout (`config check | true`) is no failure of the check.
    match cli::write_line(format!("ok: {origin}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say(format_args!("execrelay: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `execrelay backup PATH`: the database as of now, beside whatever the relay is doing.
fn backup(config: Option<&std::path::Path>, dest: &std::path::Path) -> ExitCode {
    let store = match StoreConfig::load_alone(config) {
        Ok(store) => store,
        Err(error) => {
            say(format_args!("execrelay: {error}"));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match execrelay::store::backup(&store.path, dest) {
        Ok(bytes) => {
            let said = cli::write_line(format!(
                "copied {} to {} ({bytes} bytes)",
                store.path.display(),
                dest.display()
            ));
            if let Err(error) = said {
                say(format_args!("execrelay: {error:#}"));
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            say(format_args!("execrelay: {error}"));
            ExitCode::FAILURE
        }
    }
}
