//! The `fw` command: a thin front-end over the `fw` library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // Like other command-line tools: `fw status | head` ends quietly when head closes the pipe.
    // SAFETY: restoring the default disposition of one signal before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // `fw run --log` streams the XDP program's drop records (aya-log, target fw_xdp).
    let default = if std::env::args().any(|a| a == "--log") {
        "warn,fw_xdp=info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    match fw::cli::Cli::parse().execute() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fw: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
