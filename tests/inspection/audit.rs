//! The audit log of intercepted requests: one `"event":"request"` line each, with the method
//! and the path, and never the query string or a header value.

use crate::support::https_origin::{HttpsOrigin, H2_H1};
use crate::{url, World};

#[test]
fn an_intercepted_request_is_audited_without_its_query_or_header_values() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let config = world.config(
        "mode = \"limited\"\nallowed_domains = [\"allowed.test\"]",
        "",
        "",
    );
    let audit = world.files.path("audit.jsonl");
    let target = url("allowed.test", origin.port(), "/read/me?secret=1");
    let post = url("allowed.test", origin.port(), "/write?secret=2");
    let script = format!(
        "curl -q -sS -o /dev/null -H 'X-Token: hunter2' -H 'Cookie: c=tasty' '{target}' && \
         curl -q -sS -o /dev/null -X POST -H 'Authorization: Bearer sesame' '{post}'"
    );
    let out = world.run(
        &config,
        &["--quiet", "--audit-log", &audit],
        &["sh", "-c", &script],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(origin.lines(), ["GET /read/me?secret=1"]);
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["event"] == "request").collect();
    let shape: Vec<String> = requests
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].to_string();
            [
                s("host"),
                s("method"),
                s("path"),
                s("status"),
                s("outcome"),
                s("reason"),
            ]
            .join(" ")
        })
        .collect();
    assert_eq!(
        shape,
        [
            r#""allowed.test" "GET" "/read/me" 200 "forwarded" null"#,
            r#""allowed.test" "POST" "/write" 403 "refused" "method-not-allowed""#,
        ],
        "{text}"
    );
    // Each tunnel's close line counts the bodies its requests carried.
    let closes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "close").collect();
    assert_eq!(closes.len(), 2, "{text}");
    for close in closes {
        let sum = |key: &str| -> u64 {
            requests
                .iter()
                .filter(|r| r["id"] == close["id"])
                .map(|r| r[key].as_u64().unwrap())
                .sum()
        };
        assert_eq!(close["bytes_up"].as_u64(), Some(sum("bytes_up")), "{text}");
        assert_eq!(
            close["bytes_down"].as_u64(),
            Some(sum("bytes_down")),
            "{text}"
        );
    }
    let body = "origin saw GET /read/me?secret=1 HTTP/2.0".len() as u64;
    assert_eq!(requests[0]["bytes_down"].as_u64(), Some(body), "{text}");
    for secret in ["secret", "hunter2", "tasty", "sesame", "Bearer"] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }
}
