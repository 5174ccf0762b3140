//! Pieces every netaware binary shares.

pub mod observe;
pub mod rate;
mod settings;

pub use settings::{
    format_bytes, format_duration, parse_bytes, parse_duration, parse_duration_or_zero,
    parse_nonzero_usize, parse_positive,
};

use std::ffi::OsString;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Environment variable that selects the log format (`json` or `text`).
pub const ENV_LOG_FORMAT: &str = "LOG_FORMAT";
/// Environment variable with a `tracing` filter (e.g. `info,netaware_agent=debug`).
pub const ENV_LOG_FILTER: &str = "RUST_LOG";
/// Default log filter.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Exit code for a bad command line or environment (sysexits' EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// Install the global `tracing` subscriber: JSON lines when `LOG_FORMAT=json`,
/// human-readable text otherwise, always on stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(ENV_LOG_FILTER)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var(ENV_LOG_FORMAT).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A second init (tests) fails harmlessly.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Parse arguments and environment; on a bad value print a message naming the
/// flag *and* its environment variable, then exit with [`EXIT_USAGE`] (64).
pub fn parse_args_or_exit<T: Parser>() -> T {
    match parse_args_from::<T, _, _>(std::env::args_os()) {
        Ok(v) => v,
        Err(ArgsError::Exit(e)) => e.exit(),
        Err(ArgsError::Usage(msg)) => {
            eprintln!("{msg}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// Why [`parse_args_from`] did not return a value.
#[derive(Debug)]
pub enum ArgsError {
    /// Help or version was asked for: print and exit 0.
    Exit(clap::Error),
    /// A usage error, already rendered with the environment variable named.
    Usage(String),
}

/// Testable core of [`parse_args_or_exit`].
pub fn parse_args_from<T, I, A>(args: I) -> Result<T, ArgsError>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    match T::try_parse_from(args) {
        Ok(v) => Ok(v),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Err(ArgsError::Exit(e))
        }
        Err(e) => {
            let mut msg = e.render().to_string().trim_end().to_string();
            if let Some(env) = env_var_of_error::<T>(&e) {
                msg.push_str(&format!(
                    "\n(the value comes from the flag or from the environment variable {env})"
                ));
            }
            Err(ArgsError::Usage(msg))
        }
    }
}

/// The environment variable behind the argument an error is about, if any.
fn env_var_of_error<T: Parser>(e: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    // clap renders the argument as "--long <VALUE>" or "<NAME>".
    let first = arg.split_whitespace().next()?.trim_start_matches('-');
    T::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(first) || a.get_id().as_str() == first)
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
}

/// The wall clock in microseconds since the Unix epoch (0 before 1970):
/// what report windows and answers are stamped with.
pub fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Write `text` to stdout. A closed pipe (`netaware matrix | head`) ends the
/// output quietly instead of panicking like `print!` does.
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("error: cannot write to stdout: {e}"),
    }
}

/// Render rows as an aligned text table: the first `left` columns are
/// left-aligned (names), the rest right-aligned (numbers); trailing spaces
/// are trimmed. Rows shorter than the first are padded with empty cells.
pub fn aligned_table(rows: &[Vec<String>], left: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = |r: &Vec<String>, c: usize| r.get(c).map_or(String::new(), |s| printable(s));
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = (0..cols)
            .map(|c| {
                let (s, w) = (cell(row, c), widths[c]);
                // `{:<w$}` counts chars, which is what the widths measure.
                if c < left {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `s` with control characters escaped (`\u{1b}`): text that came from the
/// network (node names) must not drive the reader's terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long, env = "DEMO_PORT_FOR_TEST")]
        port: u16,
    }

    #[test]
    fn a_bad_value_names_the_environment_variable() {
        let Err(ArgsError::Usage(msg)) = parse_args_from::<Demo, _, _>(["demo", "--port", "x"])
        else {
            panic!("expected a usage error");
        };
        assert!(msg.contains("DEMO_PORT_FOR_TEST"), "{msg}");
        assert!(msg.contains("--port"), "{msg}");
    }

    #[test]
    fn tables_escape_control_characters() {
        let rows = vec![vec!["Evil\x1b[2J".to_string(), "1".to_string()]];
        let t = aligned_table(&rows, 1);
        assert!(!t.contains('\x1b'), "{t:?}");
        assert_eq!(t, "Evil\\u{1b}[2J  1\n");
        assert_eq!(printable("dj-1 ok"), "dj-1 ok");
    }

    #[test]
    fn tables_align_names_left_and_numbers_right() {
        let rows = vec![
            vec!["name".to_string(), "ms".to_string()],
            vec!["a-long-name".to_string(), "1.5".to_string()],
            vec!["b".to_string(), "12.25".to_string()],
        ];
        assert_eq!(
            aligned_table(&rows, 1),
            "name            ms\na-long-name    1.5\nb            12.25\n"
        );
    }

    #[test]
    fn a_good_value_parses() {
        let Ok(d) = parse_args_from::<Demo, _, _>(["demo", "--port", "7"]) else {
            panic!("expected success");
        };
        assert_eq!(d.port, 7);
    }
}
