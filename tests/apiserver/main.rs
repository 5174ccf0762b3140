//! `netaware-apiserver-double`: the test-only Kubernetes API double as a
//! process, for `netaware-lab` (which starts it so the lab shows the labels
//! the aggregator writes without a cluster). Not part of the product.
//!
//! ```text
//! netaware-apiserver-double --nodes a,b,c --port-file F --kubeconfig-out K
//! ```
//! Binds an ephemeral loopback port, writes it to F and a kubeconfig to K,
//! and serves until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use netaware_e2e::apiserver::ApiServerDouble;

fn usage() -> ! {
    eprintln!(
        "usage: netaware-apiserver-double --nodes a,b,c [--port-file FILE] [--kubeconfig-out FILE]"
    );
    std::process::exit(64);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut nodes: Vec<String> = Vec::new();
    let mut port_file: Option<PathBuf> = None;
    let mut kubeconfig: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--nodes" => {
                nodes = value()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "--port-file" => port_file = Some(PathBuf::from(value())),
            "--kubeconfig-out" => kubeconfig = Some(PathBuf::from(value())),
            _ => usage(),
        }
    }
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let double = ApiServerDouble::start(&names).await?;
    if let Some(k) = kubeconfig {
        std::fs::write(k, double.kubeconfig())?;
    }
    // Written last: once the port file exists, everything is ready.
    if let Some(p) = port_file {
        let port = double
            .url()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        std::fs::write(p, port)?;
    }
    eprintln!(
        "API server double for {} nodes at {}",
        nodes.len(),
        double.url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
