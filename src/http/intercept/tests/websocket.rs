//! A WebSocket through the tunnel: the upgrade goes to the origin on an HTTP/1.1 connection,
//! and after 101 the bytes flow both ways.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clients::tls;
use super::*;

#[tokio::test]
async fn a_websocket_echoes_through_the_tunnel() {
    let (engine, origin) = world(H2_H1).await;
    let mut stream = tls(engine.addr, &engine.ca, H1).await;
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        host(&origin)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{got:?}");
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("upgrade: websocket"), "{text}");
    assert!(text.contains("sec-websocket-accept: test"), "{text}");
    for message in [&b"ping"[..], &[0x81, 0x02, b'h', b'i'][..]] {
        stream.write_all(message).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message);
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, hyper::Version::HTTP_11);
    assert_eq!(seen[0].headers["upgrade"], "websocket");
    assert_eq!(
        seen[0].headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    let checked = engine.hooks.checked.lock().unwrap().clone();
    assert_eq!(checked, [("GET".to_string(), "/ws".to_string(), false)]);
}
