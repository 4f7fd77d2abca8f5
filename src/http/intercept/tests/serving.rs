//! Allowed requests reach the origin, refused ones are answered inside TLS, over HTTP/1.1 and
//! HTTP/2 on both sides.

use super::clients::{h1, h2, read, request};
use super::*;

#[tokio::test]
async fn a_get_reaches_the_origin_with_the_tunnels_host_and_is_recorded_without_its_query() {
    let (engine, origin) = world(H2_H1).await;
    let host = host(&origin);
    let mut client = h1(engine.addr, &engine.ca).await;
    let response = client
        .send_request(request("GET", "/hello?token=secret", Some(&host), ""))
        .await
        .unwrap();
    let (status, _, body) = read(response, "x-proxy-error").await;
    assert_eq!(
        (status, &*body),
        (200, "origin saw GET /hello?token=secret")
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].host.as_str(), seen[0].version),
        (&*host, hyper::Version::HTTP_2)
    );
    let checked = engine.hooks.checked.lock().unwrap().clone();
    assert_eq!(checked, [("GET".to_string(), "/hello".to_string(), false)]);
    let records = engine.hooks.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.status),
        ("GET", "/hello", 200)
    );
    assert_eq!(
        (r.outcome, r.reason, r.bytes),
        (Outcome::Forwarded, None, [0, body.len() as u64])
    );
}

#[tokio::test]
async fn a_refused_post_is_answered_inside_tls_and_a_kept_connection_is_checked_again() {
    let (engine, origin) = world(H2_H1).await;
    let host = host(&origin);
    let mut client = h1(engine.addr, &engine.ca).await;
    let refused = client
        .send_request(request("POST", "/repos/x/issues", Some(&host), "{}"))
        .await
        .unwrap();
    let (status, reason, body) = read(refused, "x-proxy-reason").await;
    assert_eq!((status, &*reason), (403, "method-not-allowed"));
    assert!(
        body.starts_with("egress-proxy: blocked allowed.test:"),
        "{body}"
    );
    // Lazy: a refused request opens no origin connection.
    assert_eq!(origin.connections(), 0);
    client.ready().await.unwrap();
    let allowed = client
        .send_request(request("GET", "/", Some(&host), ""))
        .await
        .unwrap();
    assert_eq!(read(allowed, "").await.0, 200);
    client.ready().await.unwrap();
    let again = client
        .send_request(request("POST", "/again", Some(&host), "x"))
        .await
        .unwrap();
    assert_eq!(read(again, "x-proxy-reason").await.1, "method-not-allowed");
    let methods: Vec<String> = origin.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods, ["GET"]);
    let records = engine.hooks.records();
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| (r.status, r.outcome, r.reason))
        .collect();
    let refused = (403, Outcome::Refused, Some("method-not-allowed"));
    assert_eq!(
        outcomes,
        [refused, (200, Outcome::Forwarded, None), refused]
    );
}

#[tokio::test]
async fn a_refusal_is_json_for_a_client_that_asks() {
    let (engine, origin) = world(H2_H1).await;
    let mut client = h2(engine.addr, &engine.ca).await;
    let uri = format!("https://{}/issues", host(&origin));
    let mut req = request("POST", &uri, None, "x");
    req.headers_mut()
        .insert("accept", "application/json".parse().unwrap());
    let response = client.send_request(req).await.unwrap();
    let (status, kind, body) = read(response, "content-type").await;
    assert_eq!((status, &*kind), (403, "application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["reason"], "method-not-allowed");
    assert_eq!(json["host"], NAME);
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn http2_requests_are_multiplexed_on_one_origin_connection() {
    let (engine, origin) = world(H2_H1).await;
    let client = h2(engine.addr, &engine.ca).await;
    let uri = format!("https://{}/", host(&origin));
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            let uri = format!("{uri}{i}");
            tokio::spawn(async move {
                let response = client.send_request(request("GET", &uri, None, "")).await;
                read(response.unwrap(), "").await
            })
        })
        .collect();
    for (i, answer) in requests.into_iter().enumerate() {
        let (status, _, body) = answer.await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, &*format!("origin saw GET /{i}"))
        );
    }
    assert_eq!(origin.connections(), 1);
    assert_eq!(origin.seen().len(), 20);
}

#[tokio::test]
async fn an_http1_origin_is_pooled_and_gets_host_and_origin_form() {
    let (engine, origin) = world(H1).await;
    let host = host(&origin);
    let mut client = h2(engine.addr, &engine.ca).await;
    for i in 0..5 {
        let uri = format!("https://{host}/n{i}?x=1");
        let response = client
            .send_request(request("GET", &uri, None, ""))
            .await
            .unwrap();
        assert_eq!(read(response, "").await.0, 200);
    }
    // Each response was read to its end, so one connection served them all.
    assert_eq!(origin.connections(), 1);
    let seen = origin.seen();
    assert_eq!(seen[4].target, "/n4?x=1");
    assert_eq!(
        (seen[4].host.as_str(), seen[4].version),
        (&*host, hyper::Version::HTTP_11)
    );
}

#[tokio::test]
async fn ten_mib_go_up_and_come_down() {
    const TEN_MIB: usize = 10 * 1024 * 1024;
    for alpn in [H2_H1, H1] {
        let (engine, origin) = world(alpn).await;
        let host = host(&origin);
        let mut client = h1(engine.addr, &engine.ca).await;
        let up = request("POST", "/upload", Some(&host), vec![b'u'; TEN_MIB]);
        let response = client.send_request(up).await.unwrap();
        assert_eq!(read(response, "").await.2, format!("got {TEN_MIB}"));
        client.ready().await.unwrap();
        let down = request("GET", &format!("/size/{TEN_MIB}"), Some(&host), "");
        let response = client.send_request(down).await.unwrap();
        let (status, _, body) = read(response, "").await;
        assert_eq!((status, body.len()), (200, TEN_MIB));
        let records = engine.hooks.records();
        assert_eq!(records[0].bytes[0], TEN_MIB as u64);
        assert_eq!(records[1].bytes[1], TEN_MIB as u64);
    }
}

#[tokio::test]
async fn hop_by_hop_and_proxy_headers_stay_on_the_client_hop() {
    for (alpn, te) in [(H2_H1, Some("trailers")), (H1, None)] {
        let (engine, origin) = world(alpn).await;
        let mut client = h1(engine.addr, &engine.ca).await;
        let mut req = request("GET", "/", Some(&host(&origin)), "");
        for (name, value) in [
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic ZWdyZXNzOnRva2Vu"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            req.headers_mut().insert(name, value.parse().unwrap());
        }
        let response = client.send_request(req).await.unwrap();
        assert_eq!(read(response, "").await.0, 200);
        let headers = &origin.seen()[0].headers;
        assert_eq!(headers["x-kept"], "yes");
        for gone in ["connection", "x-secret", "proxy-authorization"] {
            assert!(!headers.contains_key(gone), "{gone} reached the origin");
        }
        let got = headers.get("te").map(|v| v.to_str().unwrap());
        assert_eq!(got, te);
    }
}
