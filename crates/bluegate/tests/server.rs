//! The server as an operator and a hostile client see it: health, metrics, errors in the right wire
//! format, request limits, Host checks, TLS versions, and start-up refusal of bad configuration.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = common::start_server("").await;
    let resp = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s.client.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["store"], "sqlite");
    // Make one counted request, then read the metrics.
    s.client
        .get(s.url("/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("bluegate_http_requests_total"), "{text}");
    assert!(
        text.contains("route=\"/fhir/.well-known/smart-configuration\""),
        "{text}"
    );
    assert!(
        text.contains("bluegate_http_request_duration_seconds_bucket"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test]
async fn errors_use_the_wire_format_of_their_path() {
    let s = common::start_server("").await;
    // Unknown OAuth-side route: JSON error.
    let resp = s.client.get(s.url("/no/such/route")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    // A resource type that is not served: OperationOutcome, before any token check.
    let resp = s
        .client
        .get(s.url("/fhir/NoSuchType/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "not-supported");
    // An unknown FHIR route: OperationOutcome too.
    let resp = s
        .client
        .get(s.url("/fhir/Patient/1/_history"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["issue"][0]["code"], "not-found");
    // Wrong method: 405 as JSON, not plain text.
    let resp = s
        .client
        .delete(s.url("/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_cleanly() {
    let s = common::start_server("").await;
    let big = vec![b'a'; 2 * 1024 * 1024];
    let resp = s
        .client
        .post(s.url("/fhir/.well-known/udap"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    // The server is still healthy afterwards.
    let resp = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn bad_host_and_origin_are_refused() {
    let s = common::start_server("").await;
    let resp = s
        .client
        .get(s.url("/fhir/.well-known/smart-configuration"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error_description"].as_str().unwrap().contains("Host"));
    let resp = s
        .client
        .get(s.url("/fhir/.well-known/smart-configuration"))
        .header("Origin", "javascript:alert(1)")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A loopback alias of the public host is fine.
    let resp = s
        .client
        .get(s.url("/healthz"))
        .header("Host", format!("127.0.0.1:{}", s.running.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.stop().await;
}

/// A TLS 1.1 ClientHello (legacy_version 0x0302, no supported_versions extension) must be refused with
/// an alert; rustls speaks only TLS 1.2 and 1.3 here.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend([0x03, 0x02]); // client_version TLS 1.1
    hello.extend([0x42; 32]); // random
    hello.push(0); // session id
    let suites: [u8; 8] = [0xc0, 0x13, 0xc0, 0x14, 0x00, 0x2f, 0x00, 0x35];
    hello.extend((suites.len() as u16).to_be_bytes());
    hello.extend(suites);
    hello.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    // server_name: localhost
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    ext.extend([0x00, 0x00]);
    ext.extend((sni.len() as u16).to_be_bytes());
    ext.extend(sni);
    // supported_groups and ec_point_formats, as a TLS 1.1 client would send.
    ext.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]);
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    hello.extend((ext.len() as u16).to_be_bytes());
    hello.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_and_tls_1_2_and_1_3_work() {
    let s = common::start_server("").await;
    let addr = s.running.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(&tls11_client_hello()).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.read(&mut buf).unwrap_or(0);
        buf[..n].to_vec()
    })
    .await
    .unwrap();
    assert!(!reply.is_empty(), "no answer to a TLS 1.1 ClientHello");
    assert_eq!(
        reply[0], 0x15,
        "expected a TLS alert record, got {reply:02x?}"
    );
    assert_ne!(
        reply[0], 0x16,
        "the server negotiated a handshake with TLS 1.1"
    );

    // openssl, as an independent client, completes TLS 1.2 and TLS 1.3 handshakes.
    for version in ["-tls1_2", "-tls1_3"] {
        let connect = format!("127.0.0.1:{}", addr.port());
        let root = s.pki.s("root-ca.pem");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("openssl")
                .args([
                    "s_client",
                    version,
                    "-connect",
                    &connect,
                    "-servername",
                    "localhost",
                    "-CAfile",
                    &root,
                    "-verify_return_error",
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Verify return code: 0"),
            "{version}: {text}"
        );
    }
    s.stop().await;
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let fhir_base = format!("https://localhost:{port}/fhir");
    let pki = common::make_pki(dir.path(), &fhir_base);
    let good = common::write_config(dir.path(), port, &pki, "");
    let good_text = std::fs::read_to_string(&good).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            good_text.replace(
                &format!("public_url = \"https://localhost:{port}\""),
                "public_url = \"localhost\"",
            ),
            "public_url",
        ),
        (
            good_text.replace("pki/tls-key.pem", "pki/missing-key.pem"),
            "tls.key",
        ),
        // A key that does not belong to the certificate.
        (
            good_text.replace(
                "key = \"pki/tls-key.pem\"",
                "key = \"pki/metadata-key.pem\"",
            ),
            "tls.key",
        ),
        (
            good_text.replace(
                "trust_anchors = [\"pki/root-ca.pem\"]",
                "trust_anchors = []",
            ),
            "communities[0].trust_anchors",
        ),
        (
            good_text.replace(
                "metadata_cert = \"pki/metadata-chain.pem\"",
                "metadata_cert = \"pki/tls-chain.pem\"",
            ),
            "communities[0].metadata_cert",
        ),
        (
            good_text.replace(
                "metadata_key = \"pki/metadata-key.pem\"",
                "metadata_key = \"pki/tls-key.pem\"",
            ),
            "communities[0].metadata_key",
        ),
        (format!("{good_text}\nunknown_key = 1\n"), "unknown_key"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = common::run(&["serve", "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with a bad {key}");
        assert!(stderr.contains(key), "stderr does not name {key}: {stderr}");
        assert!(
            stderr.contains("bad.toml"),
            "stderr does not name the file: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
