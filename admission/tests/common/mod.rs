//! Shared harness for the integration tests and the benchmark: starts the real server on
//! 127.0.0.1:0 with a freshly generated CA and serving certificate, and talks to it over TLS
//! with hyper's connection-level HTTP/1.1 and HTTP/2 clients.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use admission::namespaces::NamespaceCache;
use admission::{devcert, server, tls, Admission, Limits, ServerHandle};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::SingleCertAndKey;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type ClientBody = BoxBody<Bytes, std::io::Error>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: Option<ServerHandle>,
    pub ca_pem: String,
    /// The in-process server's state (None for an external server).
    pub app: Option<Arc<Admission>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Limits::default(), NamespaceCache::Disabled).await
    }

    pub async fn start_with(limits: Limits, namespaces: NamespaceCache) -> TestServer {
        let dev = devcert::generate(&["localhost".to_owned(), "127.0.0.1".to_owned()], 1)
            .expect("dev certificate");
        let key = tls::certified_key_from_pem(
            dev.cert_pem.as_bytes(),
            dev.key_pem.as_bytes(),
            "tls.crt".as_ref(),
            "tls.key".as_ref(),
        )
        .expect("certified key");
        let tls_config =
            tls::server_config(Arc::new(SingleCertAndKey::from(key))).expect("server config");
        let listener = server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let app = Arc::new(Admission::new(
            api::catalog::Catalog::builtin(),
            namespaces,
            limits,
        ));
        let handle = ServerHandle::spawn(listener, tls_config, app.clone()).expect("spawn");
        TestServer {
            addr: handle.local_addr,
            handle: Some(handle),
            ca_pem: dev.ca_pem,
            app: Some(app),
        }
    }

    /// A client for a server started elsewhere (e.g. the `admission` binary).
    pub fn external(addr: SocketAddr, ca_pem: String) -> TestServer {
        TestServer {
            addr,
            handle: None,
            ca_pem,
            app: None,
        }
    }

    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA cert");
        }
        let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    pub async fn tls_connect_with(
        &self,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    pub async fn tls_connect(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let config = self.client_config(rustls::ALL_VERSIONS, alpn);
        self.tls_connect_with(config).await.expect("TLS connect")
    }

    /// An HTTP/1.1 connection (ALPN `http/1.1`).
    pub async fn h1(&self) -> hyper::client::conn::http1::SendRequest<ClientBody> {
        let stream = self.tls_connect(&[b"http/1.1"]).await;
        // Flattened writes: headers and body leave in one TLS record, as a Go client sends them.
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .expect("h1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
    }

    /// An HTTP/2 connection (ALPN `h2`).
    pub async fn h2(&self) -> hyper::client::conn::http2::SendRequest<ClientBody> {
        let stream = self.tls_connect(&[b"h2"]).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("clean shutdown");
        }
    }
}

pub fn full(body: impl Into<Bytes>) -> ClientBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn empty() -> ClientBody {
    full(Bytes::new())
}

/// A request for HTTP/1.1 (origin-form URI plus Host).
pub fn request(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: ClientBody,
) -> Request<ClientBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    builder.body(body).unwrap()
}

/// The same request for HTTP/2 (absolute URI, no Host).
pub fn request_h2(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: ClientBody,
) -> Request<ClientBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .version(Version::HTTP_2);
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    builder.body(body).unwrap()
}

pub fn post_json(path: &str, body: impl Into<Bytes>) -> Request<ClientBody> {
    request("POST", path, Some("application/json"), full(body))
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

pub async fn collect(response: http::Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

pub async fn send_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<ClientBody>,
    req: Request<ClientBody>,
) -> Answer {
    sender.ready().await.expect("connection ready");
    collect(sender.send_request(req).await.expect("response")).await
}

pub async fn send_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<ClientBody>,
    req: Request<ClientBody>,
) -> Answer {
    sender.ready().await.expect("connection ready");
    collect(sender.send_request(req).await.expect("response")).await
}

/// A DELETE review of Database shop/orders (allowed by both webhooks, no patch).
pub fn delete_review(uid: &str) -> Vec<u8> {
    let object = serde_json::json!({
        "apiVersion": "example.com/v1", "kind": "Database",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"engine": "postgres"}
    });
    serde_json::to_vec(&admission::review::request_for(
        uid,
        "DELETE",
        "shop",
        None,
        Some(&object),
    ))
    .unwrap()
}

/// The sending side of [`channel_body`].
pub type FrameSender =
    futures::channel::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::io::Error>>;

/// A request body fed by the test through a channel (slow or endless uploads).
pub fn channel_body() -> (FrameSender, ClientBody) {
    let (tx, rx) = futures::channel::mpsc::channel(4);
    (tx, http_body_util::StreamBody::new(rx).boxed())
}
