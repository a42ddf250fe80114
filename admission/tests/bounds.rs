//! The server's resource bounds over real TLS, as a client (or an attacker) sees them:
//! silent connections and idle keep-alive connections are closed, the connection cap holds,
//! reviews beyond the in-flight count or byte bound get 429 + `Retry-After` at once while
//! `/healthz` keeps answering, and service resumes once the load is gone.
//!
//! Every test runs with small `Limits` so it finishes in seconds.

mod common;

use std::time::{Duration, Instant};

use admission::namespaces::NamespaceCache;
use admission::Limits;
use bytes::Bytes;
use common::*;
use futures::SinkExt;
use http::StatusCode;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// Slack on top of a configured bound for scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// A valid review padded with trailing whitespace to `len` bytes.
fn padded_review(uid: &str, len: usize) -> Vec<u8> {
    let mut body = delete_review(uid);
    assert!(body.len() < len);
    body.resize(len, b' ');
    body
}

/// Reads until the server closes the connection (EOF or an error); `Err` if it is still open
/// after `within`, `Ok(bytes)` with whatever application data arrived before the close.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Result<Vec<u8>, ()> {
    let mut buf = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut buf)).await {
        Ok(_) => Ok(buf),
        Err(_) => Err(()),
    }
}

/// An HTTP/1.1 connection whose driver task ends when the connection closes.
async fn h1_with_driver(
    server: &TestServer,
) -> (
    hyper::client::conn::http1::SendRequest<ClientBody>,
    JoinHandle<()>,
) {
    let stream = server.tls_connect(&[b"http/1.1"]).await;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, driver)
}

/// An HTTP/2 connection whose driver task ends when the connection closes (GOAWAY + close).
async fn h2_with_driver(
    server: &TestServer,
) -> (
    hyper::client::conn::http2::SendRequest<ClientBody>,
    JoinHandle<()>,
) {
    let stream = server.tls_connect(&[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, driver)
}

async fn healthz_h1(server: &TestServer) -> StatusCode {
    let mut h1 = server.h1().await;
    send_h1(&mut h1, request("GET", "/healthz", None, empty()))
        .await
        .status
}

/// Waits until the server counts `n` reviews in flight (their headers arrived and they were
/// admitted), so the next review meets a full server rather than racing the held ones.
async fn wait_in_flight(server: &TestServer, n: usize) {
    let app = server.app.as_ref().expect("in-process server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.reviews_in_flight() != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} reviews in flight, server counts {}",
            app.reviews_in_flight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A review whose headers and first `first` bytes are sent; the rest is sent by `release`.
struct HeldReview {
    tx: FrameSender,
    rest: Bytes,
    answer: JoinHandle<Answer>,
}

impl HeldReview {
    async fn start(server: &TestServer, uid: &str, len: usize) -> HeldReview {
        let body = padded_review(uid, len);
        let first = Bytes::copy_from_slice(&body[..16]);
        let rest = Bytes::copy_from_slice(&body[16..]);
        let (mut tx, stream) = channel_body();
        let mut req = request("POST", "/validate", Some("application/json"), stream);
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, body.len().into());
        tx.send(Ok(Frame::data(first))).await.unwrap();
        let mut h1 = server.h1().await;
        h1.ready().await.unwrap();
        let answer = tokio::spawn(async move {
            collect(h1.send_request(req).await.expect("held review answered")).await
        });
        HeldReview { tx, rest, answer }
    }

    async fn release(mut self) -> Answer {
        self.tx.send(Ok(Frame::data(self.rest))).await.unwrap();
        drop(self.tx);
        self.answer.await.unwrap()
    }
}

/// A review that is answered (not held): 200 or 429 and how long the answer took.
async fn quick_review(server: &TestServer, http2: bool, len: usize) -> (Answer, Duration) {
    let body = padded_review("quick", len);
    let started = Instant::now();
    let answer = if http2 {
        let mut h2 = server.h2().await;
        let mut req = request_h2("POST", "/validate", Some("application/json"), full(body));
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, len.into());
        send_h2(&mut h2, req).await
    } else {
        let mut h1 = server.h1().await;
        send_h1(&mut h1, post_json("/validate", body)).await
    };
    (answer, started.elapsed())
}

/// A review whose body is still being sent when the answer comes (declared 1 MiB, 16 bytes sent).
async fn uploading_review(server: &TestServer, http2: bool) -> (Answer, Duration) {
    let (mut tx, body) = channel_body();
    tx.send(Ok(Frame::data(Bytes::from_static(b"{\"apiVersion\": \""))))
        .await
        .unwrap();
    let started = Instant::now();
    let response = if http2 {
        let mut h2 = server.h2().await;
        let mut req = request_h2("POST", "/validate", Some("application/json"), body);
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, (1024 * 1024).into());
        h2.ready().await.unwrap();
        h2.send_request(req).await
    } else {
        let mut h1 = server.h1().await;
        let mut req = request("POST", "/validate", Some("application/json"), body);
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, (1024 * 1024).into());
        h1.ready().await.unwrap();
        h1.send_request(req).await
    };
    let response = response.unwrap_or_else(|e| {
        panic!("http2={http2}: no answer while the body was still uploading: {e:?}")
    });
    let answer = collect(response).await;
    drop(tx);
    (answer, started.elapsed())
}

fn assert_overloaded(answer: &Answer, elapsed: Duration, what: &str, fragment: &str) {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{what}: {}",
        answer.text()
    );
    let retry_after = answer
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| (1..=10).contains(&s)),
        "{what}: Retry-After {:?}",
        answer.headers.get(http::header::RETRY_AFTER)
    );
    assert!(
        answer.text().contains(fragment),
        "{what}: {:?} lacks {fragment:?}",
        answer.text()
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "{what}: 429 took {elapsed:?}; it must come at once"
    );
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_first_request_timeout() {
    let first = Duration::from_millis(500);
    let limits = Limits {
        first_request_timeout: first,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    // Both ALPN protocols: the server has not seen a byte of HTTP from any of them.
    let mut silent = Vec::new();
    let opened = Instant::now();
    for i in 0..50 {
        let alpn: &[&[u8]] = if i % 2 == 0 { &[b"http/1.1"] } else { &[b"h2"] };
        silent.push(server.tls_connect(alpn).await);
    }
    // Opening 50 handshakes takes a while on a loaded machine; the bound counts from each accept.
    let bound = first + SLACK + opened.elapsed();
    let closing = silent.iter_mut().map(|stream| closed_within(stream, bound));
    let results = futures::future::join_all(closing).await;
    let still_open = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        still_open, 0,
        "{still_open} of 50 silent connections still open after {bound:?}"
    );
    for (i, data) in results.into_iter().enumerate() {
        let data = data.unwrap_or_default();
        assert!(
            data.is_empty() || data.starts_with(b"HTTP/1.1 408") || i % 2 == 1,
            "connection {i} got {:?}",
            String::from_utf8_lossy(&data)
        );
    }
    assert_eq!(healthz_h1(&server).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(800);
    let limits = Limits {
        idle_timeout: idle,
        // Longer than the test: only the idle bound may close the connections.
        header_read_timeout: Duration::from_secs(60),
        first_request_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;

    let (mut h1, h1_driver) = h1_with_driver(&server).await;
    let (mut h2, h2_driver) = h2_with_driver(&server).await;
    // A few requests, so the idle clock restarts after each one.
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(idle / 2).await;
        }
        let a = send_h1(&mut h1, post_json("/validate", delete_review("idle-h1"))).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let a = send_h2(
            &mut h2,
            request_h2(
                "POST",
                "/validate",
                Some("application/json"),
                full(delete_review("idle-h2")),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    let last_request = Instant::now();
    tokio::time::sleep(idle / 4).await;
    assert!(
        !h1_driver.is_finished() && !h2_driver.is_finished(),
        "connections closed before the idle timeout"
    );
    for (name, driver) in [("HTTP/1.1", h1_driver), ("HTTP/2", h2_driver)] {
        tokio::time::timeout(idle + SLACK, driver)
            .await
            .unwrap_or_else(|_| {
                panic!("idle {name} connection still open after {:?}", idle + SLACK)
            })
            .unwrap();
        let after = last_request.elapsed();
        assert!(
            after >= idle.mul_f32(0.9),
            "{name} closed after {after:?} idle"
        );
    }
    assert!(h1.is_closed() && h2.is_closed());
    assert_eq!(healthz_h1(&server).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_beyond_max_connections_is_closed_and_one_is_served_once_others_close() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut h1 = server.h1().await;
        let a = send_h1(&mut h1, request("GET", "/healthz", None, empty())).await;
        assert_eq!(a.status, StatusCode::OK);
        open.push(h1);
    }
    // The fourth is accepted by the kernel and closed by the server at once: no handshake.
    let started = Instant::now();
    let config = server.client_config(rustls::ALL_VERSIONS, &[b"http/1.1"]);
    let refused = tokio::time::timeout(SLACK, server.tls_connect_with(config.clone())).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "fourth connection was not closed at once: {:?}",
        refused.map(|r| r.map(|_| "handshake completed"))
    );
    assert!(started.elapsed() < SLACK);
    // The first three still work.
    for h1 in &mut open {
        let a = send_h1(h1, request("GET", "/healthz", None, empty())).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // Close one; a new connection is served (its slot frees when the server sees the close).
    drop(open.pop());
    let deadline = Instant::now() + SLACK;
    let mut h1 = loop {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(SLACK, server.tls_connect_with(config.clone())).await
        {
            let (sender, conn) = hyper::client::conn::http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            break sender;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one of the three closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a = send_h1(&mut h1, request("GET", "/healthz", None, empty())).await;
    assert_eq!(a.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn reviews_beyond_max_in_flight_get_429_while_healthz_answers() {
    let limits = Limits {
        max_in_flight: 2,
        body_read_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    let held = [
        HeldReview::start(&server, "held-1", 4096).await,
        HeldReview::start(&server, "held-2", 4096).await,
    ];
    wait_in_flight(&server, 2).await;

    for http2 in [false, true] {
        let (answer, elapsed) = quick_review(&server, http2, 1024).await;
        assert_overloaded(
            &answer,
            elapsed,
            &format!("third review, http2={http2}"),
            "too many reviews in flight",
        );
    }
    // A client still uploading its body (as the API server does with a large object) gets the
    // 429 too: on HTTP/2 the stream ends with the answer, not with a reset (CANCEL) before it.
    for http2 in [false, true] {
        let (answer, elapsed) = uploading_review(&server, http2).await;
        assert_overloaded(
            &answer,
            elapsed,
            &format!("third review still uploading, http2={http2}"),
            "too many reviews in flight",
        );
    }
    let started = Instant::now();
    assert_eq!(healthz_h1(&server).await, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.app.as_ref().unwrap().reviews_in_flight(), 2);

    for (i, review) in held.into_iter().enumerate() {
        let answer = review.release().await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(
            answer.json()["response"]["uid"],
            format!("held-{}", i + 1).as_str()
        );
    }
    wait_in_flight(&server, 0).await;
    for http2 in [false, true] {
        let (answer, _) = quick_review(&server, http2, 1024).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    server.stop().await;
}

#[tokio::test]
async fn reviews_beyond_max_in_flight_bytes_get_429_while_small_ones_pass() {
    const MIB: usize = 1024 * 1024;
    let limits = Limits {
        max_in_flight: 32,
        max_in_flight_bytes: 4 * MIB,
        body_read_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, NamespaceCache::Disabled).await;
    // 3 MiB of the 4 MiB budget held by one slow review.
    let held = HeldReview::start(&server, "held-big", 3 * MIB - 64).await;
    wait_in_flight(&server, 1).await;

    for http2 in [false, true] {
        let (answer, elapsed) = quick_review(&server, http2, 2 * MIB).await;
        assert_overloaded(
            &answer,
            elapsed,
            &format!("2 MiB review, http2={http2}"),
            "too many review bytes in flight",
        );
        // The count bound is far away: a small review fits in the remaining bytes.
        let (answer, _) = quick_review(&server, http2, 1024).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    assert_eq!(healthz_h1(&server).await, StatusCode::OK);

    let answer = held.release().await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    wait_in_flight(&server, 0).await;
    let (answer, _) = quick_review(&server, false, 2 * MIB).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    server.stop().await;
}
