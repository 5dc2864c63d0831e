//! The `fw` command: a thin front-end over the `fw` library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match fw::cli::Cli::parse().execute() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fw: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
