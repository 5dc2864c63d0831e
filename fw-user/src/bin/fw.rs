//! The `fw` command: a thin front-end over the `fw` library.
//!
//! Exit status: 0 done (or nothing to do), 1 error (nothing changed unless the message says
//! so), 2 usage error, 3 `fw status` found a filter that does not work as its state says.

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
        Ok(exit) => std::process::ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("fw: error: {}", fw::cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
