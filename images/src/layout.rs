//! Writing one image as an OCI image layout directory:
//!
//! ```text
//! <out>/<name>/oci-layout            {"imageLayoutVersion": "1.0.0"}
//! <out>/<name>/index.json            the manifest, tagged with the version
//! <out>/<name>/blobs/sha256/<hex>    layer (tar+gzip), config, manifest
//! ```
//!
//! The layer is reproducible: sorted entries, owner root, time 0, gzip
//! without a timestamp, so the same binary gives the same digests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder,
    RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Result, io};
use crate::spec::{BIN_DIR, ImageSpec, USER, net_raw_capability};

/// Annotation naming a manifest's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The files of an image besides its binary.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Directory holding the static binaries.
    pub bin_dir: PathBuf,
    /// CA certificates (PEM bundle) for TLS to an API server whose CA is
    /// not in the kubeconfig; Debian's `ca-certificates` has one.
    pub ca_bundle: PathBuf,
    /// Version label and tag (the chart's appVersion).
    pub version: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn digest(bytes: &[u8]) -> Result<Sha256Digest> {
    let hex = sha256(bytes);
    Ok(hex.trim_start_matches("sha256:").parse()?)
}

/// Store `bytes` as a blob; returns its descriptor.
fn put_blob(dir: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
    let d = digest(bytes)?;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let path = blobs.join(d.digest());
    std::fs::write(&path, bytes).map_err(io(&path))?;
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .size(bytes.len() as u64)
        .digest(d)
        .build()?)
}

/// A tar header for a root-owned entry with time 0.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The uncompressed layer: a few directories, the user database, the CA
/// bundle and the binary (with its file capability, if any).
pub fn layer_tar(spec: &ImageSpec, binary: &[u8], ca_bundle: &[u8]) -> Result<Vec<u8>> {
    let mut t = tar::Builder::new(Vec::new());
    let tar_err = io("layer.tar");
    let bin_dir = BIN_DIR.trim_start_matches('/');
    let mut dirs: Vec<String> = ["etc", "etc/ssl", "etc/ssl/certs", "tmp"]
        .map(String::from)
        .to_vec();
    // Every parent of the binary's directory: usr, usr/local, usr/local/bin.
    let parts: Vec<&str> = bin_dir.split('/').collect();
    dirs.extend((1..=parts.len()).map(|n| parts[..n].join("/")));
    dirs.sort_unstable();
    dirs.dedup();
    let result: std::io::Result<()> = (|| {
        for d in &dirs {
            // /tmp is world-writable and sticky, as everywhere.
            let mode = if d == "tmp" { 0o1777 } else { 0o755 };
            let mut h = header(tar::EntryType::Directory, mode, 0);
            t.append_data(&mut h, format!("{d}/"), std::io::empty())?;
        }
        let passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
        let group = "root:x:0:\nnonroot:x:65532:\n";
        for (path, body) in [
            ("etc/group", group.as_bytes()),
            ("etc/passwd", passwd.as_bytes()),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, body.len() as u64);
            t.append_data(&mut h, path, body)?;
        }
        let mut h = header(tar::EntryType::Regular, 0o644, ca_bundle.len() as u64);
        t.append_data(&mut h, "etc/ssl/certs/ca-certificates.crt", ca_bundle)?;
        if spec.net_raw {
            let cap = net_raw_capability();
            t.append_pax_extensions([("SCHILY.xattr.security.capability", &cap[..])])?;
        }
        let mut h = header(tar::EntryType::Regular, 0o755, binary.len() as u64);
        t.append_data(&mut h, format!("{bin_dir}/{}", spec.binary), binary)?;
        t.finish()
    })();
    result.map_err(tar_err)?;
    t.into_inner().map_err(io("layer.tar"))
}

/// JSON with every object's keys sorted: oci-spec keeps labels and
/// annotations in hash maps, whose order changes from run to run, and a
/// digest must not.
pub fn canonical_json<T: serde::Serialize>(doc: &T) -> Result<Vec<u8>> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sorted(serde_json::to_value(doc)?))?)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // GzEncoder writes no file name and a zero timestamp: reproducible.
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(bytes).map_err(io("layer.tar.gz"))?;
    gz.finish().map_err(io("layer.tar.gz"))
}

/// Write the image of `spec` under `out/<name>`, replacing what was there;
/// returns the image's directory.
pub fn write_image(spec: &ImageSpec, inputs: &Inputs, out: &Path) -> Result<PathBuf> {
    let bin_path = inputs.bin_dir.join(spec.binary);
    let binary = std::fs::read(&bin_path).map_err(io(&bin_path))?;
    let ca = std::fs::read(&inputs.ca_bundle).map_err(io(&inputs.ca_bundle))?;
    let dir = out.join(spec.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;

    let tar = layer_tar(spec, &binary, &ca)?;
    let layer = put_blob(&dir, MediaType::ImageLayerGzip, &gzip(&tar)?)?;
    let labels = HashMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            spec.name.to_string(),
        ),
        (
            "org.opencontainers.image.description".to_string(),
            spec.description.to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            inputs.version.clone(),
        ),
        (
            "org.opencontainers.image.licenses".to_string(),
            "Apache-2.0".to_string(),
        ),
    ]);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user(USER)
                .entrypoint(vec![spec.entrypoint()])
                .env(vec![format!("PATH={BIN_DIR}:/usr/bin:/bin")])
                .labels(labels)
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![sha256(&tar)])
                .build()?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created_by(format!(
                    "netaware-images: {} as a static binary",
                    spec.binary
                ))
                .build()?,
        ])
        .build()?;
    let config = put_blob(&dir, MediaType::ImageConfig, &canonical_json(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()?;
    let mut manifest_desc = put_blob(&dir, MediaType::ImageManifest, &canonical_json(&manifest)?)?;
    manifest_desc.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .build()?,
    ));
    manifest_desc.set_annotations(Some(HashMap::from([(
        REF_NAME.to_string(),
        inputs.version.clone(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()?;
    let index_path = dir.join("index.json");
    std::fs::write(&index_path, canonical_json(&index)?).map_err(io(&index_path))?;
    OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?
        .to_file(dir.join("oci-layout"))?;
    Ok(dir)
}

#[cfg(test)]
pub(crate) mod tests;
