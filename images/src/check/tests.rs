use super::*;
use crate::layout::write_image;
use crate::spec::IMAGES;

fn built(tag: &str) -> PathBuf {
    let (out, inputs) = crate::layout::tests::scratch(tag);
    for spec in &IMAGES {
        write_image(spec, &inputs, &out).unwrap();
    }
    out
}

fn refused(spec: &ImageSpec, out: &Path, version: &str) -> String {
    check_image(spec, out, version, false)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_image_unlike_its_spec_is_refused_with_the_reason() {
    let out = built("unlike");
    let [agent, aggregator, cli] = IMAGES;
    let cases = [
        (agent, "9.9.9", "expected 9.9.9"),
        // The agent checked as if it should have no capability, the
        // aggregator as if it should: both fail.
        (
            ImageSpec {
                net_raw: false,
                ..agent
            },
            "1.2.3",
            "file capability",
        ),
        (
            ImageSpec {
                net_raw: true,
                ..aggregator
            },
            "1.2.3",
            "file capability",
        ),
        (
            ImageSpec {
                max_bytes: 100,
                ..cli
            },
            "1.2.3",
            "more than the 100 allowed",
        ),
        (
            ImageSpec {
                binary: "netaware-aggregator",
                ..cli
            },
            "1.2.3",
            "entrypoint",
        ),
    ];
    for (spec, version, needle) in cases {
        let e = refused(&spec, &out, version);
        assert!(e.contains(needle), "{spec:?}: {e}");
    }
}

#[test]
fn a_changed_blob_is_refused() {
    let out = built("tamper");
    let blobs = out.join("netaware/blobs/sha256");
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let p = entry.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        if bytes.len() > 200 {
            // The layer: flip one byte.
            bytes[100] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let e = refused(&IMAGES[2], &out, "1.2.3");
    assert!(e.contains("does not match its descriptor"), "{e}");
}
