//! The server's HTTP behaviour over real TLS: protocols, keep-alive, every bad-input status,
//! timeouts, metrics and graceful shutdown.

mod common;

use std::time::Duration;

use admission::namespaces::NamespaceCache;
use admission::Limits;
use bytes::Bytes;
use common::*;
use futures::SinkExt;
use http::{StatusCode, Version};
use hyper::body::Frame;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn http2_is_negotiated_with_alpn_and_serves_reviews() {
    let server = TestServer::start().await;
    let mut h2 = server.h2().await;
    let answer = send_h2(&mut h2, request_h2("GET", "/healthz", None, empty())).await;
    assert_eq!(
        (answer.status, answer.version),
        (StatusCode::OK, Version::HTTP_2)
    );
    let answer = send_h2(
        &mut h2,
        request_h2(
            "POST",
            "/validate",
            Some("application/json"),
            full(delete_review("h2-1")),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["response"]["uid"], "h2-1");
    assert_eq!(answer.json()["response"]["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn http1_keep_alive_serves_many_requests_on_one_connection() {
    let server = TestServer::start().await;
    let mut h1 = server.h1().await;
    for i in 0..25 {
        let uid = format!("keepalive-{i}");
        let answer = send_h1(&mut h1, post_json("/mutate", delete_review(&uid))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.version, Version::HTTP_11);
        assert_eq!(answer.json()["response"]["uid"], uid.as_str());
        assert!(answer
            .headers
            .get(http::header::CONNECTION)
            .is_none_or(|v| v != "close"));
    }
    assert!(
        !h1.is_closed(),
        "the connection must stay open between requests"
    );
    server.stop().await;
}

#[tokio::test]
async fn tls12_and_tls13_are_both_accepted() {
    let server = TestServer::start().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = server.client_config(&[version], &[b"http/1.1"]);
        let stream = server.tls_connect_with(config).await.expect("handshake");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
    }
    server.stop().await;
}

#[tokio::test]
async fn client_without_alpn_gets_http1() {
    let server = TestServer::start().await;
    let stream = server.tls_connect(&[]).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let answer = send_h1(&mut sender, request("GET", "/healthz", None, empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_precise_statuses() {
    let server = TestServer::start().await;
    let mut h1 = server.h1().await;
    let review = delete_review("x");
    let cases: Vec<(&str, http::Request<ClientBody>, StatusCode, &str)> = vec![
        ("unknown_path_is_404", post_json("/nope", review.clone()), StatusCode::NOT_FOUND, "no such path"),
        ("get_on_validate_is_405", request("GET", "/validate", None, empty()), StatusCode::METHOD_NOT_ALLOWED, "POST"),
        ("put_on_mutate_is_405", request("PUT", "/mutate", Some("application/json"), full(review.clone())), StatusCode::METHOD_NOT_ALLOWED, "POST"),
        ("post_on_healthz_is_405", post_json("/healthz", "{}"), StatusCode::METHOD_NOT_ALLOWED, "GET"),
        ("text_plain_is_415", request("POST", "/validate", Some("text/plain"), full(review.clone())), StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json"),
        ("missing_content_type_is_415", request("POST", "/convert", None, full(review.clone())), StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json"),
        ("yaml_is_415", request("POST", "/mutate", Some("application/yaml"), full(review.clone())), StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json"),
        ("not_json_is_400", post_json("/validate", "{not json"), StatusCode::BAD_REQUEST, "not valid JSON"),
        ("json_array_is_400", post_json("/validate", "[]"), StatusCode::BAD_REQUEST, "JSON object"),
        ("wrong_review_version_is_400", post_json("/validate", r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#), StatusCode::BAD_REQUEST, "admission.k8s.io/v1"),
        ("missing_request_is_400", post_json("/mutate", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#), StatusCode::BAD_REQUEST, "no request"),
        ("uid_of_wrong_type_is_400", post_json("/validate", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}"#), StatusCode::BAD_REQUEST, "malformed"),
        ("object_not_an_object_is_400", post_json("/validate", serde_json::to_vec(&json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":"db"}})).unwrap()), StatusCode::BAD_REQUEST, "request.object must be a JSON object"),
        ("conversion_review_on_validate_is_400", post_json("/validate", r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{"uid":"u","desiredAPIVersion":"example.com/v1","objects":[]}}"#), StatusCode::BAD_REQUEST, "AdmissionReview"),
        ("admission_review_on_convert_is_400", post_json("/convert", review.clone()), StatusCode::BAD_REQUEST, "ConversionReview"),
        ("invalid_utf8_in_a_skipped_field_is_400", post_json("/convert", [&br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","note":""#[..], &[0xe1], br#"","request":{"uid":"u","desiredAPIVersion":"example.com/v1","objects":[]}}"#].concat()), StatusCode::BAD_REQUEST, "not UTF-8 at byte 74"),
        ("conversion_without_request_is_400", post_json("/convert", r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview"}"#), StatusCode::BAD_REQUEST, "no request"),
    ];
    for (name, req, status, fragment) in cases {
        let answer = send_h1(&mut h1, req).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.text());
        assert!(
            answer.text().contains(fragment),
            "{name}: {:?} lacks {fragment:?}",
            answer.text()
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                answer.headers.contains_key(http::header::ALLOW),
                "{name}: no Allow header"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn content_type_with_charset_is_accepted() {
    let server = TestServer::start().await;
    let mut h1 = server.h1().await;
    let req = request(
        "POST",
        "/validate",
        Some("application/json; charset=utf-8"),
        full(delete_review("cs")),
    );
    let answer = send_h1(&mut h1, req).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    server.stop().await;
}

#[tokio::test]
async fn declared_oversized_body_is_413_without_reading_it() {
    let server = TestServer::start().await;
    let mut h1 = server.h1().await;
    let (mut tx, body) = channel_body();
    let mut req = request("POST", "/validate", Some("application/json"), body);
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, (3 * 1024 * 1024 + 1).into());
    // Only a few bytes are ever sent: the answer must come from Content-Length alone.
    tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), send_h1(&mut h1, req))
        .await
        .expect("413 before the body arrives");
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    server.stop().await;
}

#[tokio::test]
async fn streamed_oversized_body_is_413() {
    let server = TestServer::start().await;
    for http2 in [false, true] {
        let (mut tx, body) = channel_body();
        let feeder = tokio::spawn(async move {
            let chunk = Bytes::from(vec![b' '; 256 * 1024]);
            // 16 MiB in total if nobody stops us; the server must stop reading at 3 MiB.
            for _ in 0..64 {
                if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                    break;
                }
            }
        });
        let answer = if http2 {
            let mut h2 = server.h2().await;
            send_h2(
                &mut h2,
                request_h2("POST", "/mutate", Some("application/json"), body),
            )
            .await
        } else {
            let mut h1 = server.h1().await;
            send_h1(
                &mut h1,
                request("POST", "/mutate", Some("application/json"), body),
            )
            .await
        };
        assert_eq!(
            answer.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "http2={http2}: {}",
            answer.text()
        );
        feeder.abort();
    }
    server.stop().await;
}

#[tokio::test]
async fn body_just_under_the_limit_is_read() {
    let server = TestServer::start().await;
    let mut h1 = server.h1().await;
    // A valid review padded with whitespace to just under 3 MiB.
    let mut body = delete_review("big");
    body.resize(3 * 1024 * 1024 - 16, b' ');
    let answer = send_h1(&mut h1, post_json("/validate", body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    server.stop().await;
}

#[tokio::test]
async fn slow_body_gets_408_after_the_body_read_timeout() {
    let limits = Limits {
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    let mut h1 = server.h1().await;
    let (mut tx, body) = channel_body();
    tx.send(Ok(Frame::data(Bytes::from_static(b"{\"apiVersion\""))))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = send_h1(
        &mut h1,
        request("POST", "/validate", Some("application/json"), body),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        answer.text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
    server.stop().await;
}

#[tokio::test]
async fn request_over_the_request_timeout_gets_503() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    let mut h2 = server.h2().await;
    let (mut tx, body) = channel_body();
    tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
        .await
        .unwrap();
    let answer = send_h2(
        &mut h2,
        request_h2("POST", "/mutate", Some("application/json"), body),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    drop(tx);
    server.stop().await;
}

#[tokio::test]
async fn incomplete_headers_are_cut_off_after_the_header_read_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    let mut stream = server.tls_connect(&[b"http/1.1"]).await;
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    // The server closes the connection (possibly after a 408); it must not wait forever.
    assert!(
        read.is_ok(),
        "connection still open after the header read timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn garbage_instead_of_tls_does_not_disturb_the_server() {
    let server = TestServer::start().await;
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf)).await;
    let mut h1 = server.h1().await;
    let answer = send_h1(&mut h1, request("GET", "/healthz", None, empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn probes_and_metrics_report_decisions() {
    let server = TestServer::start().await;
    let mut h1 = server.h1().await;
    assert_eq!(
        send_h1(&mut h1, request("GET", "/healthz", None, empty()))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send_h1(&mut h1, request("GET", "/readyz", None, empty()))
            .await
            .status,
        StatusCode::OK
    );
    send_h1(&mut h1, post_json("/validate", delete_review("m1"))).await;
    send_h1(&mut h1, post_json("/validate", delete_review("m2"))).await;
    send_h1(&mut h1, post_json("/mutate", "garbage")).await;
    let answer = send_h1(&mut h1, request("GET", "/metrics", None, empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    for line in [
        r#"admission_requests_total{operation="validate",decision="allowed"} 2"#,
        r#"admission_requests_total{operation="mutate",decision="error"} 1"#,
        r#"admission_requests_total{operation="convert",decision="denied"} 0"#,
        r#"admission_request_duration_seconds_count{operation="validate",decision="allowed"} 2"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let mut server = TestServer::start().await;
    let mut h1 = server.h1().await;
    let review = delete_review("in-flight");
    let (first, rest) = review.split_at(review.len() / 2);
    let (first, rest) = (Bytes::copy_from_slice(first), Bytes::copy_from_slice(rest));
    let (mut tx, body) = channel_body();
    let mut req = request("POST", "/validate", Some("application/json"), body);
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, review.len().into());
    tx.send(Ok(Frame::data(first))).await.unwrap();
    h1.ready().await.unwrap();
    let in_flight = tokio::spawn(h1.send_request(req));
    // Let the server receive the headers and start reading the body.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = server.handle.take().unwrap().begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown must wait for the in-flight request"
    );
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no new connections after shutdown started"
    );

    tx.send(Ok(Frame::data(rest))).await.unwrap();
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request answered");
    let answer = collect(response).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["response"]["uid"], "in-flight");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown completes after the last request")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_keep_alive_connections_promptly() {
    let mut server = TestServer::start().await;
    let mut h1 = server.h1().await;
    let answer = send_h1(&mut h1, request("GET", "/healthz", None, empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    let stopping = server.handle.take().unwrap().begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("idle connections do not hold shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn readiness_fails_once_draining_begins() {
    let app = std::sync::Arc::new(admission::Admission::new(
        api::catalog::Catalog::builtin(),
        NamespaceCache::Disabled,
        Limits::default(),
    ));
    let probe = || {
        http::Request::get("/readyz")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(
        admission::router::handle(&app, probe()).await.status(),
        StatusCode::OK
    );
    app.begin_draining();
    let response = admission::router::handle(&app, probe()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
