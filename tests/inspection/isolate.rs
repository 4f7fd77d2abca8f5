//! `run --isolate` with `[mitm]`: inside the command's own network namespace the CA bundle is
//! readable and curl, through the proxy variables alone, reaches an intercepted host.

use crate::support::https_origin::{HttpsOrigin, H2_H1};
use crate::{url, World};

#[test]
fn an_isolated_command_trusts_the_bundle_and_reaches_an_intercepted_host() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let config = world.config(
        "mode = \"limited\"\nallowed_domains = [\"allowed.test\"]",
        "",
        "",
    );
    let get = url("allowed.test", origin.port(), "/iso");
    let script = format!(
        "head -c 27 \"$SSL_CERT_FILE\"; echo; \
         curl -q -sS --max-time 10 '{get}'; echo; \
         curl -q -sS --max-time 10 -o /dev/null -w '%{{http_code}} %header{{x-proxy-reason}}' \
         -X DELETE '{get}'"
    );
    let out = world.run(&config, &["--isolate", "--quiet"], &["sh", "-c", &script]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "-----BEGIN CERTIFICATE-----\n\
         origin saw GET /iso HTTP/2.0\n\
         403 method-not-allowed",
        "{out:?}"
    );
    assert_eq!(origin.lines(), ["GET /iso"]);
}
