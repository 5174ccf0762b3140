//! `netaware-agent` binary: parse settings, run the library.

use netaware_agent::Config;

// One thread is plenty for a few hundred probes per second, and keeps the
// agent's memory and CPU small (timestamps come from the kernel anyway).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config: Config = netaware_common::parse_args_or_exit();
    netaware_common::init_logging();
    netaware_agent::run(config, netaware_common::shutdown_signal()).await?;
    Ok(())
}
