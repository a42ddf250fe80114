//! The HTTPS server: TCP accept loop, TLS, HTTP/1.1 + HTTP/2 and graceful shutdown.
//!
//! Modelled on linkerd2's policy-controller (kubert): TLS material is validated before binding
//! (see [`crate::tls`]), certificates come from a `ResolvesServerCert` so rotation needs no
//! restart, hyper-util's auto builder serves HTTP/1.1 (keep-alive) and HTTP/2 (ALPN `h2`), and
//! shutdown stops accepting, lets in-flight requests finish, then closes connections. Every
//! connection is bounded in number and in idle time (see [`serve`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
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

/// Request activity of one connection, for closing it when idle.
struct Activity {
    epoch: Instant,
    /// Requests being answered on this connection.
    busy: AtomicUsize,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Whether a request has ever arrived.
    served: AtomicBool,
    /// Woken whenever a request ends, so the idle clock is re-read at once (a sleep computed
    /// before the first request, from `first_request_timeout`, must not outlast `idle_timeout`).
    changed: Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.served.store(true, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `idle` (or for `first`
    /// since the accept, before any request arrived).
    async fn idle_for(&self, first: Duration, idle: Duration) {
        loop {
            // Registered before the state is read, so a request ending in between is not missed.
            let ended = self.changed.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            if self.busy.load(Ordering::Acquire) > 0 {
                // Requests keep a connection open however long they take.
                ended.await;
                continue;
            }
            let (since, limit) = if self.served.load(Ordering::Relaxed) {
                let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                (since, idle)
            } else {
                (Duration::ZERO, first)
            };
            let deadline = self.epoch + since + limit;
            if deadline <= Instant::now() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = ended => {}
            }
        }
    }
}

/// Held while a request is answered; marks the connection idle from the moment it drops.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.0.epoch.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Serves until `shutdown` resolves, then drains: no new connections, in-flight requests
/// finish (bounded by `Limits::shutdown_grace`), idle keep-alive connections are closed.
///
/// Connections are bounded: at most `Limits::max_connections` open (one more is accepted and
/// closed at once), the TLS handshake within `Limits::tls_handshake_timeout`, the first request
/// within `Limits::first_request_timeout` of the accept, and a connection with no request in
/// flight for `Limits::idle_timeout` is closed gracefully (HTTP/2: GOAWAY, so the API server
/// opens a new one for its next call). Connections with requests keep going however long.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<Admission>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(http_builder(&app));
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(app.limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    match listener.local_addr() {
        Ok(addr) => tracing::info!(listen = %addr, "admission server listening"),
        Err(error) => tracing::warn!(%error, "admission server listening on an unknown address"),
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = app.limits.max_connections, "connection limit reached; closing new connection");
                    drop(tcp);
                    continue;
                };
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, %peer, "set_nodelay failed");
                }
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let app = app.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    serve_connection(tcp, peer, acceptor, &builder, app, stop).await;
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining in-flight requests"
    );
    let grace = app.limits.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            connections = connections.len(),
            "shutdown grace period over; dropping remaining connections"
        );
        connections.shutdown().await;
    }
    tracing::info!("admission server stopped");
    Ok(())
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    builder: &auto::Builder<TokioExecutor>,
    app: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let limits = app.limits.clone();
    let handshake = tokio::time::timeout(
        limits
            .tls_handshake_timeout
            .min(limits.first_request_timeout),
        acceptor.accept(tcp),
    );
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|stop| *stop) => return,
    };
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let app = app.clone();
            let guard = activity.begin();
            async move {
                let response = router::handle(&app, req).await;
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection closed with error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = activity.idle_for(limits.first_request_timeout, limits.idle_timeout), if !closing => {
                tracing::debug!(%peer, "closing idle connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
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
