use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;
use tonic::metadata::MetadataValue;

use super::*;

fn agents() -> ServiceAccount {
    "netaware/netaware-agent".parse().unwrap()
}

fn status(user: &str, extra: &[(&str, &str)], audiences: &[&str]) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        error: None,
        user: Some(UserInfo {
            username: Some(user.into()),
            extra: Some(
                extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..UserInfo::default()
        }),
    }
}

const AGENT_USER: &str = "system:serviceaccount:netaware:netaware-agent";

#[test]
fn a_bound_token_of_the_agent_account_names_its_pod_and_node() {
    let s = status(
        AGENT_USER,
        &[
            (EXTRA_POD_NAME, "agent-x1"),
            (EXTRA_POD_UID, "u-1"),
            (EXTRA_NODE_NAME, "dj-1"),
        ],
        &["netaware"],
    );
    assert_eq!(
        claims(&s, &agents()).unwrap(),
        Claims {
            pod: "agent-x1".into(),
            pod_uid: Some("u-1".into()),
            node: Some("dj-1".into()),
        }
    );
    // Before Kubernetes 1.30 (or with the gate off): no node, a pod to look up.
    let s = status(AGENT_USER, &[(EXTRA_POD_NAME, "agent-x1")], &["netaware"]);
    assert_eq!(claims(&s, &agents()).unwrap().node, None);
}

#[test]
fn every_other_answer_is_refused_with_its_reason() {
    let bound = [(EXTRA_POD_NAME, "p"), (EXTRA_NODE_NAME, "dj-1")];
    let cases = [
        (
            TokenReviewStatus {
                authenticated: Some(false),
                error: Some("[invalid bearer token, token audiences [\"x\"] is invalid for the target audiences [\"netaware\"]]".into()),
                ..TokenReviewStatus::default()
            },
            "wrong_audience",
        ),
        (
            TokenReviewStatus {
                authenticated: Some(false),
                error: Some("token has been invalidated".into()),
                ..TokenReviewStatus::default()
            },
            "invalid_token",
        ),
        (TokenReviewStatus::default(), "invalid_token"),
        // Authenticated, but by an authenticator blind to audiences.
        (status(AGENT_USER, &bound, &[]), "wrong_audience"),
        (
            status("system:serviceaccount:netaware:default", &bound, &["netaware"]),
            "wrong_service_account",
        ),
        (
            status("system:serviceaccount:other:netaware-agent", &bound, &["netaware"]),
            "wrong_service_account",
        ),
        (status("alice", &bound, &["netaware"]), "wrong_service_account"),
        (
            status(AGENT_USER, &[(EXTRA_NODE_NAME, "dj-1")], &["netaware"]),
            "not_pod_bound",
        ),
    ];
    for (s, reason) in cases {
        let denied = claims(&s, &agents()).unwrap_err();
        assert_eq!(denied.reason(), reason, "{s:?}: {denied}");
    }
}

#[test]
fn refusals_map_to_grpc_codes_and_say_what_to_do() {
    use tonic::Code;
    assert_eq!(Denied::NoToken.status().code(), Code::Unauthenticated);
    assert!(Denied::NoToken.status().message().contains("--token-file"));
    assert_eq!(Denied::WrongAudience.status().code(), Code::Unauthenticated);
    let m = Denied::NodeMismatch {
        token: "dj-1".into(),
        hello: "dj-2".into(),
    };
    assert_eq!(m.status().code(), Code::PermissionDenied);
    assert!(m.to_string().contains("'dj-1'") && m.to_string().contains("'dj-2'"));
    assert_eq!(
        Denied::Unavailable("x".into()).status().code(),
        Code::Unavailable
    );
}

#[test]
fn the_bearer_token_is_read_strictly() {
    let mut md = MetadataMap::new();
    assert_eq!(bearer(&md), Err(Denied::NoToken));
    md.insert("authorization", MetadataValue::from_static("Basic abc"));
    assert_eq!(bearer(&md), Err(Denied::Malformed));
    md.insert("authorization", MetadataValue::from_static("Bearer "));
    assert_eq!(bearer(&md), Err(Denied::Malformed));
    md.insert(
        "authorization",
        MetadataValue::from_static("Bearer abc.def"),
    );
    assert_eq!(bearer(&md), Ok("abc.def"));
    let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    md.insert("authorization", long.parse().unwrap());
    assert_eq!(bearer(&md), Err(Denied::Malformed));
}

fn jwt(payload: &serde_json::Value) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        b.encode(br#"{"alg":"ES256"}"#),
        b.encode(payload.to_string())
    )
}

#[test]
fn trust_lasts_until_the_token_expires_at_most_an_hour() {
    let now = 1_800_000_000;
    let t = |p| trust_for(&jwt(&p), now);
    assert_eq!(
        t(serde_json::json!({"exp": now + 600})),
        Duration::from_secs(600)
    );
    // An extended token (a year) is trusted until its warnafter, capped.
    assert_eq!(
        t(serde_json::json!({"exp": now + 31_536_000, "kubernetes.io": {"warnafter": now + 1200}})),
        Duration::from_secs(1200)
    );
    assert_eq!(t(serde_json::json!({"exp": now + 31_536_000})), MAX_TRUST);
    assert_eq!(t(serde_json::json!({"exp": now - 5})), Duration::ZERO);
    assert_eq!(trust_for("not-a-jwt", now), MAX_TRUST);
}

#[test]
fn the_cache_forgets_expired_answers_and_stays_bounded() {
    let now = Instant::now();
    let mut c = Cache::default();
    let agent = Agent {
        node: "dj-1".into(),
        pod: "p".into(),
        valid_until: now + Duration::from_secs(10),
    };
    c.put([1; 32], Ok(agent.clone()), agent.valid_until, now);
    assert_eq!(c.get(&[1; 32], now), Some(Ok(agent.clone())));
    assert_eq!(c.get(&[1; 32], now + Duration::from_secs(10)), None);
    assert!(c.answers.is_empty(), "an expired answer is dropped");

    for i in 0..MAX_CACHED + 100 {
        let mut key = [0; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        c.put(key, Err(Denied::NoToken), now + REFUSED_FOR, now);
        assert!(c.answers.len() <= MAX_CACHED);
    }
    // Full of refusals: they make room for an accepted agent.
    c.put([9; 32], Ok(agent.clone()), agent.valid_until, now);
    assert_eq!(c.get(&[9; 32], now), Some(Ok(agent)));
}

#[test]
fn the_agent_service_account_is_namespace_slash_name() {
    let sa = agents();
    assert_eq!(sa.user(), AGENT_USER);
    assert_eq!(sa.to_string(), "netaware/netaware-agent");
    for bad in ["netaware", "/x", "x/", "a.b/c", "Net/x", "a/b/c"] {
        assert!(bad.parse::<ServiceAccount>().is_err(), "{bad}");
    }
}

#[test]
fn only_the_nodes_own_addresses_are_probed() {
    use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some("dj-1".into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                [
                    ("InternalIP", "10.0.0.1"),
                    ("ExternalIP", "fd00::1"),
                    ("Hostname", "10.9.9.9"),
                ]
                .iter()
                .map(|(t, a)| NodeAddress {
                    type_: t.to_string(),
                    address: a.to_string(),
                })
                .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let given = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The same IPv6 address written another way is the same address.
    assert_eq!(
        own_addresses(&node, &given(&["10.0.0.1", "fd00:0::1", "127.0.0.9"])).unwrap(),
        (given(&["10.0.0.1", "fd00:0::1"]), given(&["127.0.0.9"]))
    );
    // A Hostname entry is not a probe address; none left: refused.
    let denied = own_addresses(&node, &given(&["10.9.9.9"])).unwrap_err();
    assert_eq!(denied.reason(), "foreign_address");
    assert!(denied.to_string().contains("10.0.0.1"), "{denied}");
    assert_eq!(denied.status().code(), tonic::Code::PermissionDenied);
}
