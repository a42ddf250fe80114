//! The HTTPS server: TCP accept loop, TLS, HTTP/1.1 + HTTP/2 and graceful shutdown.
//!
//! Modelled on linkerd2's policy-controller (kubert): TLS material is validated before binding
//! (see [`crate::tls`]), certificates come from a `ResolvesServerCert` so rotation needs no
//! restart, hyper-util's auto builder serves HTTP/1.1 (keep-alive) and HTTP/2 (ALPN `h2`), and
//! shutdown stops accepting, lets in-flight requests finish, then closes connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::router::{self, Admission};

/// Binds `addr`. Split from [`serve`] so TLS files are checked before the port is taken and
/// tests can bind `127.0.0.1:0` and learn the port.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Bind { addr, source })
}

fn http_builder(app: &Admission) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(app.limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serves until `shutdown` resolves, then drains: no new connections, in-flight requests
/// finish (bounded by `Limits::shutdown_grace`), idle keep-alive connections are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<Admission>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(http_builder(&app));
    let graceful = GracefulShutdown::new();
    match listener.local_addr() {
        Ok(addr) => tracing::info!(listen = %addr, "admission server listening"),
        Err(error) => tracing::warn!(%error, "admission server listening on an unknown address"),
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Typically EMFILE; back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, %peer, "set_nodelay failed");
                }
                let watcher = graceful.watcher();
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        app.limits.tls_handshake_timeout,
                        acceptor.accept(tcp),
                    );
                    let tls = match handshake.await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(router::handle(&app, req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(error) = watcher.watch(conn).await {
                        tracing::debug!(%error, %peer, "connection closed with error");
                    }
                });
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        "shutting down: draining in-flight requests"
    );
    let grace = app.limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "shutdown grace period over; dropping remaining connections"
        );
    }
    tracing::info!("admission server stopped");
    Ok(())
}

/// A server running on a background task (tests, the benchmark, embedding).
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), crate::Error>>,
}

impl ServerHandle {
    /// Spawns [`serve`] on `listener`.
    pub fn spawn(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        app: Arc<Admission>,
    ) -> std::io::Result<ServerHandle> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, app, async {
            let _ = stopped.await;
        }));
        Ok(ServerHandle {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> Result<(), crate::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(crate::Error::Io {
                context: "server task failed".to_owned(),
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }

    /// Starts a graceful shutdown and returns the task to await later (to observe draining).
    pub fn begin_shutdown(mut self) -> JoinHandle<Result<(), crate::Error>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
