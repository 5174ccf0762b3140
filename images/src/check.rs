//! Reading an image back from its layout and checking it against its spec:
//! every blob's digest and size, the config (platform, user, entrypoint,
//! version), the layer's diff id and contents (the binary, its file
//! capability), the compressed size, and, as root, that the entrypoint
//! runs from the unpacked layer as the image's user.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::GzDecoder;
use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};

use crate::error::{Error, Result, io};
use crate::layout::{REF_NAME, sha256};
use crate::spec::{ImageSpec, USER, net_raw_capability};

/// What a checked image is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Compressed size of all blobs a pull transfers (layer + config + manifest).
    pub pull_bytes: u64,
    /// What `<entrypoint> --version` printed, when it was run.
    pub version_output: Option<String>,
}

fn problem(spec: &ImageSpec, p: impl Into<String>) -> Error {
    Error::Check {
        image: spec.name.to_string(),
        problem: p.into(),
    }
}

/// The bytes of `desc`'s blob, checked against its digest and size.
fn blob(spec: &ImageSpec, dir: &Path, desc: &Descriptor) -> Result<Vec<u8>> {
    let hex = desc
        .as_digest_sha256()
        .ok_or_else(|| problem(spec, format!("digest {} is not sha256", desc.digest())))?;
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    if sha256(&bytes) != format!("sha256:{hex}") || bytes.len() as u64 != desc.size() {
        return Err(problem(
            spec,
            format!("blob {hex} does not match its descriptor (digest or size)"),
        ));
    }
    Ok(bytes)
}

/// Check the image of `spec` in `out/<name>`, tagged `version`. With
/// `run`, unpack the layer and run the entrypoint with `--version` in a
/// chroot as the image's user (needs root).
pub fn check_image(spec: &ImageSpec, out: &Path, version: &str, run: bool) -> Result<Checked> {
    let dir = out.join(spec.name);
    let index = ImageIndex::from_file(dir.join("index.json"))?;
    let [manifest_desc] = index.manifests().as_slice() else {
        return Err(problem(spec, "index.json must hold exactly one manifest"));
    };
    let tag = manifest_desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME));
    if tag.map(String::as_str) != Some(version) {
        return Err(problem(spec, format!("tagged {tag:?}, expected {version}")));
    }
    let manifest_bytes = blob(spec, &dir, manifest_desc)?;
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])?;
    let config_bytes = blob(spec, &dir, manifest.config())?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])?;
    if *config.architecture() != Arch::Amd64 || *config.os() != Os::Linux {
        return Err(problem(spec, "platform is not linux/amd64"));
    }
    let c = config
        .config()
        .as_ref()
        .ok_or_else(|| problem(spec, "the config has no execution parameters"))?;
    if c.user().as_deref() != Some(USER) {
        return Err(problem(
            spec,
            format!("user {:?}, expected {USER}", c.user()),
        ));
    }
    let entrypoint = spec.entrypoint();
    if c.entrypoint().as_deref() != Some(std::slice::from_ref(&entrypoint)) {
        return Err(problem(
            spec,
            format!("entrypoint {:?}, expected [{entrypoint}]", c.entrypoint()),
        ));
    }
    let label = c
        .labels()
        .as_ref()
        .and_then(|l| l.get("org.opencontainers.image.version"));
    if label.map(String::as_str) != Some(version) {
        return Err(problem(
            spec,
            format!("version label {label:?}, expected {version}"),
        ));
    }
    let [layer_desc] = manifest.layers().as_slice() else {
        return Err(problem(spec, "the image must have exactly one layer"));
    };
    let layer = blob(spec, &dir, layer_desc)?;
    let mut tar = Vec::new();
    GzDecoder::new(&layer[..])
        .read_to_end(&mut tar)
        .map_err(io(dir.join("blobs")))?;
    if config.rootfs().diff_ids().as_slice() != [sha256(&tar)] {
        return Err(problem(spec, "the config's diff id is not the layer's"));
    }
    check_layer(spec, &tar)?;
    let pull_bytes = manifest_bytes.len() as u64 + config_bytes.len() as u64 + layer.len() as u64;
    if pull_bytes > spec.max_bytes {
        return Err(problem(
            spec,
            format!(
                "{pull_bytes} bytes compressed, more than the {} allowed: find out what grew",
                spec.max_bytes
            ),
        ));
    }
    let version_output = if run {
        Some(run_entrypoint(spec, &tar, out)?)
    } else {
        None
    };
    Ok(Checked {
        pull_bytes,
        version_output,
    })
}

/// The binary is there, executable, and has the file capability exactly
/// when the spec asks for it.
fn check_layer(spec: &ImageSpec, tar: &[u8]) -> Result<()> {
    let want = spec.entrypoint();
    let want = want.trim_start_matches('/');
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(io("layer"))?;
    for entry in entries {
        let mut entry = entry.map_err(io("layer"))?;
        let path = entry.path().map_err(io("layer"))?.display().to_string();
        if path != want {
            continue;
        }
        let mode = entry.header().mode().map_err(io(&path))?;
        if mode & 0o111 != 0o111 {
            return Err(problem(
                spec,
                format!("{path} is not executable (mode {mode:o})"),
            ));
        }
        let mut cap = None;
        if let Some(ext) = entry.pax_extensions().map_err(io(&path))? {
            for e in ext {
                let e = e.map_err(io(&path))?;
                if e.key() == Ok("SCHILY.xattr.security.capability") {
                    cap = Some(e.value_bytes().to_vec());
                }
            }
        }
        let expected = spec.net_raw.then(|| net_raw_capability().to_vec());
        if cap != expected {
            return Err(problem(
                spec,
                format!(
                    "{path}: file capability {cap:?}, expected {expected:?} (cap_net_raw+ep or none)"
                ),
            ));
        }
        return Ok(());
    }
    Err(problem(spec, format!("the layer has no /{want}")))
}

/// Unpack the layer under `out` and run `<entrypoint> --version` in a
/// chroot as the image's user; returns what it printed.
fn run_entrypoint(spec: &ImageSpec, tar: &[u8], out: &Path) -> Result<String> {
    let root: PathBuf = out.join(format!("{}.rootfs", spec.name));
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io(&root))?;
    }
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    tar::Archive::new(tar).unpack(&root).map_err(io(&root))?;
    let run = Command::new("chroot")
        .arg(format!("--userspec={USER}"))
        .arg(&root)
        .arg(spec.entrypoint())
        .arg("--version")
        .output()
        .map_err(io("chroot"))?;
    let stdout = String::from_utf8_lossy(&run.stdout).trim().to_string();
    if !run.status.success() {
        return Err(problem(
            spec,
            format!(
                "{} --version in a chroot of the layer failed ({}): {}{}",
                spec.entrypoint(),
                run.status,
                stdout,
                String::from_utf8_lossy(&run.stderr)
            ),
        ));
    }
    std::fs::remove_dir_all(&root).map_err(io(&root))?;
    Ok(stdout)
}

#[cfg(test)]
mod tests;
