//! `netaware` binary: parse the command line, run it, print the answer.

use netaware_cli::{Cli, EXIT_UNAVAILABLE, Error};

#[tokio::main]
async fn main() {
    let cli: Cli = netaware_common::parse_args_or_exit();
    match netaware_cli::execute(&cli).await {
        Ok(out) => netaware_common::print_stdout(&out),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(match e {
                Error::Unreachable { .. } => EXIT_UNAVAILABLE,
                Error::Status(_) | Error::Yaml(_) => 1,
                Error::Credentials(_) | Error::Listen(_) => netaware_common::EXIT_USAGE,
            });
        }
    }
}
