use super::*;
use std::path::PathBuf;

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_capability_is_what_setcap_cap_net_raw_ep_writes() {
    // getfattr -e hex -n security.capability after `setcap cap_net_raw+ep`:
    // 0x0100000200200000000000000000000000000000
    let want = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(net_raw_capability(), want);
}

/// The Dockerfile's stages: target name → its lines.
fn docker_stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            let name = from.rsplit_once(" AS ").map_or("", |(_, n)| n).trim();
            stages.push((name.to_string(), Vec::new()));
        } else if let Some((_, lines)) = stages.last_mut() {
            lines.push(line.to_string());
        }
    }
    stages
}

#[test]
fn the_dockerfile_builds_the_same_images() {
    let stages = docker_stages(&repo_file("Dockerfile"));
    for spec in IMAGES {
        let (_, lines) = stages
            .iter()
            .find(|(name, _)| name == spec.docker_target)
            .unwrap_or_else(|| panic!("the Dockerfile has no target {}", spec.docker_target));
        let has = |want: &str| lines.iter().any(|l| l == want);
        let copy = format!(
            "COPY --from=build /src/target/release/{} {}",
            spec.binary,
            spec.entrypoint()
        );
        assert!(has(&copy), "{}: no `{copy}`", spec.docker_target);
        assert!(
            has(&format!("USER {USER}")),
            "{}: not USER {USER}",
            spec.docker_target
        );
        let entry = format!("ENTRYPOINT [\"{}\"]", spec.entrypoint());
        assert!(has(&entry), "{}: no `{entry}`", spec.docker_target);
        let setcap = lines
            .iter()
            .any(|l| l.contains(&format!("setcap cap_net_raw+ep {}", spec.entrypoint())));
        assert_eq!(
            setcap, spec.net_raw,
            "{}: setcap cap_net_raw+ep",
            spec.docker_target
        );
    }
}

#[test]
fn the_chart_runs_these_images_as_their_user() {
    for (template, image) in [
        (
            "charts/netaware/templates/agent-daemonset.yaml",
            "netaware-agent",
        ),
        (
            "charts/netaware/templates/aggregator-deployment.yaml",
            "netaware-aggregator",
        ),
    ] {
        assert!(
            IMAGES.iter().any(|s| s.name == image),
            "{image} is not built"
        );
        let t = repo_file(template);
        assert!(
            t.contains(&format!("\"name\" \"{image}\"")),
            "{template} does not pull {image}"
        );
        let (uid, gid) = USER.split_once(':').unwrap();
        assert!(t.contains(&format!("runAsUser: {uid}")), "{template}");
        assert!(t.contains(&format!("runAsGroup: {gid}")), "{template}");
    }
}
