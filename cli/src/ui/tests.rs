use super::*;

const SERVED: &str = "127.0.0.1:7480";

fn served() -> SocketAddr {
    SERVED.parse().unwrap()
}

fn get(path: &str, host: Option<&str>) -> Request<()> {
    let mut b = Request::get(path);
    if let Some(h) = host {
        b = b.header(header::HOST, h);
    }
    b.body(()).unwrap()
}

fn refused(req: &Request<()>) -> Refusal {
    route(req, served()).unwrap_err()
}

#[test]
fn the_view_and_a_placement_are_routed() {
    assert_eq!(
        route(&get("/api/view", Some(SERVED)), served()),
        Ok(Route::View)
    );
    assert_eq!(
        route(&get("/api/view", Some("localhost:7480")), served()),
        Ok(Route::View)
    );
    let got = route(
        &get(
            "/api/place?k=4&selector=zone%3Da%2Ctier!%3Dspot&bytes=8MiB",
            Some(SERVED),
        ),
        served(),
    );
    assert_eq!(
        got,
        Ok(Route::Place(PlaceQuery {
            k: 4,
            selector: Some("zone=a,tier!=spot".into()),
            bytes: Some(8 << 20),
        }))
    );
    // Empty optional parameters are absent ones (a form's blank fields).
    let got = route(
        &get("/api/place?k=2&selector=&bytes=", Some(SERVED)),
        served(),
    );
    assert_eq!(
        got,
        Ok(Route::Place(PlaceQuery {
            k: 2,
            selector: None,
            bytes: None
        }))
    );
}

#[test]
fn another_host_name_is_refused_before_anything_is_asked() {
    // DNS rebinding: evil.example resolving to 127.0.0.1 sends its own name.
    for host in [
        Some("evil.example:7480"),
        Some("127.0.0.1:7481"),
        Some("127.0.0.1"),
        Some("localhost"),
        None,
    ] {
        let no = refused(&get("/api/view", host));
        assert_eq!(no.status, StatusCode::FORBIDDEN, "{host:?}");
        assert!(no.why.contains("http://127.0.0.1:7480/"), "{}", no.why);
    }
}

#[test]
fn only_get_on_known_paths_with_a_bounded_query() {
    let post = Request::post("/api/place?k=2")
        .header(header::HOST, SERVED)
        .body(())
        .unwrap();
    assert_eq!(refused(&post).status, StatusCode::METHOD_NOT_ALLOWED);
    let no = refused(&get("/api/secrets", Some(SERVED)));
    assert_eq!(no.status, StatusCode::NOT_FOUND);
    assert!(no.why.contains("/api/view"), "{}", no.why);
    let long = format!("/api/place?k=2&selector={}", "a".repeat(MAX_QUERY_BYTES));
    assert_eq!(
        refused(&get(&long, Some(SERVED))).status,
        StatusCode::URI_TOO_LONG
    );
}

#[test]
fn a_bad_placement_query_says_what_to_give() {
    for (query, says) in [
        ("", "k is missing"),
        ("k=0", "between 1 and"),
        ("k=100001", "between 1 and"),
        ("k=four", "whole number"),
        ("k=-1", "whole number"),
        ("k=2&bytes=lots", "bytes=\"lots\""),
        ("k=2&nodes=a", "unknown parameter \"nodes\""),
    ] {
        let no = refused(&get(&format!("/api/place?{query}"), Some(SERVED)));
        assert_eq!(no.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(no.why.contains(says), "{query}: {}", no.why);
    }
}

#[test]
fn a_zoom_and_a_node_are_routed_with_their_names() {
    assert_eq!(
        route(
            &get("/api/pairs?a=rack-1&b=rack%202", Some(SERVED)),
            served()
        ),
        Ok(Route::Pairs {
            a: "rack-1".into(),
            b: "rack 2".into(),
            level: 1,
        })
    );
    assert_eq!(
        route(&get("/api/pairs?a=p1&b=p2&level=2", Some(SERVED)), served()),
        Ok(Route::Pairs {
            a: "p1".into(),
            b: "p2".into(),
            level: 2,
        })
    );
    assert_eq!(
        route(&get("/api/node?name=gpu-7", Some(SERVED)), served()),
        Ok(Route::Node("gpu-7".into()))
    );
    assert_eq!(
        route(&get("/api/watch?a=gpu-7&b=gpu-9", Some(SERVED)), served()),
        Ok(Route::Watch {
            a: "gpu-7".into(),
            b: "gpu-9".into()
        })
    );
    let long = "n".repeat(MAX_NAME_BYTES + 1);
    for (path, says) in [
        ("/api/pairs?a=r1".to_string(), "b is missing"),
        ("/api/pairs?a=r1&b=".to_string(), "b=\"\""),
        ("/api/pairs?a=r1&a=r2&b=r3".to_string(), "a given twice"),
        ("/api/node".to_string(), "name is missing"),
        ("/api/watch?a=gpu-7".to_string(), "b is missing"),
        ("/api/pairs?a=r1&b=r2&level=4".to_string(), "1, 2 or 3"),
        (format!("/api/node?name={long}"), "1 to 253"),
        ("/api/node?name=a%0Ab".to_string(), "1 to 253"),
    ] {
        let no = refused(&get(&path, Some(SERVED)));
        assert_eq!(no.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(no.why.contains(says), "{path}: {}", no.why);
    }
}

#[test]
fn a_placement_asks_with_the_explanation() {
    let r = place_request(&PlaceQuery {
        k: 3,
        selector: Some("zone=a".into()),
        bytes: Some(1 << 20),
    });
    assert_eq!((r.k, r.label_selector.as_str()), (3, "zone=a"));
    assert_eq!(r.allreduce_bytes, 1 << 20);
    assert!(r.explain);
    assert!(!r.allow_stale, "stale nodes only when asked");
}

#[test]
fn only_loopback_addresses_are_served_on() {
    assert!(check_listen("127.0.0.1:0".parse().unwrap()).is_ok());
    assert!(check_listen("[::1]:7480".parse().unwrap()).is_ok());
    for addr in ["0.0.0.0:7480", "192.0.2.7:7480", "[::]:7480"] {
        let e = check_listen(addr.parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{addr}: {e}");
    }
}

#[tokio::test]
async fn an_unreachable_aggregator_is_a_502_that_says_so() {
    // Nothing listens on port 1.
    let target = Target::from("http://127.0.0.1:1");
    let r = respond(
        &Arc::new(target.clone()),
        &ViewCache::new(Arc::new(target.clone())),
        served(),
        &get("/api/view", Some(SERVED)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("cannot reach the aggregator"), "{e}");
}

#[tokio::test]
async fn the_page_and_its_parts_come_from_the_binary_with_a_strict_policy() {
    // No aggregator is asked for them.
    let target = Target::from("http://127.0.0.1:1");
    for (path, ctype, has) in [
        ("/", "text/html", "<svg id=\"heatmap\""),
        ("/app.js", "text/javascript", "fetchJson(\"/api/view\")"),
        ("/app.css", "text/css", ".cell.unmeasured"),
    ] {
        let r = respond(
            &Arc::new(target.clone()),
            &ViewCache::new(Arc::new(target.clone())),
            served(),
            &get(path, Some(SERVED)),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(
            h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ctype),
            "{path}"
        );
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(has), "{path}");
    }
}

#[test]
fn a_refused_question_is_the_users_and_an_unavailable_aggregator_the_gateways() {
    use tonic::Code;
    assert_eq!(
        refused_question(Code::InvalidArgument),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        refused_question(Code::FailedPrecondition),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        refused_question(Code::PermissionDenied),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        refused_question(Code::Unauthenticated),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(refused_question(Code::Unavailable), None);
    assert_eq!(refused_question(Code::Internal), None);
}
