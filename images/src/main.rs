//! `netaware-images`: build netaware's OCI images from static binaries, or
//! check built ones (scripts/images.sh runs both).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use netaware_images::layout::{Inputs, write_image};
use netaware_images::spec::IMAGES;

/// Build or check netaware's container images (OCI image layouts).
#[derive(Debug, Parser)]
#[command(name = "netaware-images", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write one OCI image layout per binary under OUT/<image name>.
    Build {
        /// Directory with the static binaries.
        #[arg(long)]
        bin_dir: PathBuf,
        /// PEM bundle of CA certificates to ship.
        #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
        ca_bundle: PathBuf,
        /// Tag and version label (the chart's appVersion).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
    },
    /// Check every image under OUT against its spec.
    Check {
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
        /// Also run each entrypoint with --version from the unpacked layer
        /// in a chroot, as the image's user (needs root).
        #[arg(long)]
        run: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = netaware_common::parse_args_or_exit();
    match cli.command {
        Cmd::Build {
            bin_dir,
            ca_bundle,
            version,
            out,
        } => {
            let inputs = Inputs {
                bin_dir,
                ca_bundle,
                version,
            };
            for spec in &IMAGES {
                let dir = write_image(spec, &inputs, &out)
                    .with_context(|| format!("building image {}", spec.name))?;
                println!("{}: {}", spec.name, dir.display());
            }
        }
        Cmd::Check { version, out, run } => {
            for spec in &IMAGES {
                let c = netaware_images::check::check_image(spec, &out, &version, run)?;
                println!(
                    "{}: ok, {:.1} MiB to pull (limit {:.0} MiB){}",
                    spec.name,
                    c.pull_bytes as f64 / 1048576.0,
                    spec.max_bytes as f64 / 1048576.0,
                    c.version_output
                        .map(|v| format!(", entrypoint says \"{v}\""))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
