use super::*;
use crate::check::check_image;
use crate::spec::IMAGES;

/// A scratch directory with fake binaries and a CA bundle.
pub(crate) fn scratch(tag: &str) -> (PathBuf, Inputs) {
    let dir = std::env::temp_dir().join(format!("netaware-images-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for spec in IMAGES {
        std::fs::write(bins.join(spec.binary), format!("binary of {}", spec.name)).unwrap();
    }
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let inputs = Inputs {
        bin_dir: bins,
        ca_bundle: ca,
        version: "1.2.3".into(),
    };
    (dir.join("out"), inputs)
}

fn entries(tar: &[u8]) -> Vec<(String, u32)> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_layer_holds_the_binary_and_what_a_static_binary_needs() {
    let got = entries(&layer_tar(&IMAGES[1], b"bin", b"ca").unwrap());
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/",
            "etc/ssl/",
            "etc/ssl/certs/",
            "tmp/",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/netaware-aggregator",
        ]
    );
    let mode = |p: &str| got.iter().find(|(q, _)| q == p).unwrap().1;
    assert_eq!(mode("usr/local/bin/netaware-aggregator"), 0o755);
    assert_eq!(mode("tmp/"), 0o1777);
    assert_eq!(mode("etc/passwd"), 0o644);
}

#[test]
fn images_are_reproducible_and_pass_their_check() {
    let (out, inputs) = scratch("repro");
    for spec in &IMAGES {
        write_image(spec, &inputs, &out).unwrap();
    }
    let first = std::fs::read_to_string(out.join("netaware-agent/index.json")).unwrap();
    for spec in &IMAGES {
        write_image(spec, &inputs, &out).unwrap();
        let c = check_image(spec, &out, "1.2.3", false).unwrap();
        assert!(c.pull_bytes > 0 && c.version_output.is_none(), "{c:?}");
    }
    // The same inputs give the same digests.
    let again = std::fs::read_to_string(out.join("netaware-agent/index.json")).unwrap();
    assert_eq!(first, again);
    let layout = std::fs::read_to_string(out.join("netaware-agent/oci-layout")).unwrap();
    assert!(
        layout.contains("\"imageLayoutVersion\":\"1.0.0\""),
        "{layout}"
    );
}

#[test]
fn a_missing_binary_names_its_path() {
    let (out, mut inputs) = scratch("missing");
    inputs.bin_dir = inputs.bin_dir.join("nowhere");
    let e = write_image(&IMAGES[0], &inputs, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere/netaware-agent"), "{e}");
}
