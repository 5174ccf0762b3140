//! `netaware-aggregator` binary: parse settings, run the library.

use netaware_aggregator::Config;

/// How long blocking work (a placement search) may delay the exit after the
/// servers stopped: dropping a runtime would wait for it without a limit.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let config: Config = netaware_common::parse_args_or_exit();
    netaware_common::init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(netaware_aggregator::run(
        config,
        netaware_common::shutdown_signal(),
    ));
    runtime.shutdown_timeout(BLOCKING_GRACE);
    Ok(result?)
}
