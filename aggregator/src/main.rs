//! `netaware-aggregator` binary: parse settings, run the library.

use netaware_aggregator::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = netaware_common::parse_args_or_exit();
    netaware_common::init_logging();
    netaware_aggregator::run(config, netaware_common::shutdown_signal()).await?;
    Ok(())
}
