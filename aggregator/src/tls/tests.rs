use super::*;

/// A self-signed certificate for `host` and its key, as PEM.
fn pair(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netaware-tls-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_key_of_another_certificate_or_no_pem_is_refused_saying_which() {
    let (cert_a, key_a) = pair("a.example");
    let (_, key_b) = pair("b.example");
    assert!(certified_key(cert_a.as_bytes(), key_a.as_bytes(), "x").is_ok());
    let e = certified_key(cert_a.as_bytes(), key_b.as_bytes(), "x").unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    let e = certified_key(b"hello", key_a.as_bytes(), "x").unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
    let e = certified_key(cert_a.as_bytes(), b"", "x").unwrap_err();
    assert!(e.to_string().contains("no PEM private key"), "{e}");
}

#[test]
fn a_changed_pair_is_taken_and_a_broken_one_leaves_the_old_in_place() {
    let d = dir("reload");
    let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
    let (c1, k1) = pair("one.example");
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let source = (read_pem(&cert).unwrap(), read_pem(&key).unwrap());
    let r = Reloading {
        cert: cert.clone(),
        key: key.clone(),
        current: RwLock::new(Current {
            key: certified_key(&source.0, &source.1, "x").unwrap(),
            source,
        }),
    };
    let served = |r: &Reloading| r.current.read().unwrap().key.cert[0].clone();
    let first = served(&r);
    assert!(!r.reload().unwrap(), "unchanged files: nothing to do");

    // Half an update (the certificate, not yet its key): refused, kept.
    let (c2, k2) = pair("two.example");
    std::fs::write(&cert, &c2).unwrap();
    assert!(r.reload().is_err());
    assert_eq!(served(&r), first);

    std::fs::write(&key, &k2).unwrap();
    assert!(r.reload().unwrap());
    assert_ne!(served(&r), first);
    std::fs::remove_dir_all(&d).unwrap();
}
