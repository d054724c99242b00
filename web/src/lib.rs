//! What Patron's two servers (the edge's POS API, the hub) share, so both binaries
//! behave alike: configuration layering ([`config`]), accepting connections under
//! limits ([`serve`]), request tracing and the shutdown signal. The web foundation of the cashier UI and the HQ console will grow
//! here.

pub mod config;
pub mod rate;
pub mod serve;

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// Wraps `router` in request tracing: a span per request named by its method and its
/// *matched route* (`/v1/members/{id}`), never the URI — paths and query strings carry
/// member ids and phone numbers, which must not reach the logs. The response is
/// logged at debug with its status and latency; a 5xx at error.
pub fn traced<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("(unmatched)", MatchedPath::as_str);
                tracing::info_span!("request", method = %req.method(), route)
            })
            .on_request(())
            .on_response(
                |res: &axum::response::Response, latency: Duration, _: &Span| {
                    tracing::debug!(
                        status = res.status().as_u16(),
                        latency_us = latency.as_micros() as u64,
                        "answered"
                    );
                },
            )
            .on_failure(
                |class: ServerErrorsFailureClass, latency: Duration, _: &Span| {
                    tracing::error!(%class, latency_us = latency.as_micros() as u64, "request failed");
                },
            ),
    )
}

/// Resolves on SIGTERM (systemd, `kill`) or Ctrl-C: servers stop taking connections,
/// finish the requests in flight, and return.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, Ctrl-C still stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::routing::get;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The span names the route, not the path: the member id in the path and the phone
    /// in the query never reach the log.
    #[tokio::test]
    async fn requests_are_traced_by_route_without_the_path() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app: Router = traced(Router::new().route("/v1/members/{id}", get(|| async { "ok" })));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let addr = listener.local_addr().map_err(|e| e.to_string());
        let addr = addr.unwrap_or_else(|e| panic!("{e}"));
        // Served on this task: the test's subscriber sees the server's spans.
        let server = axum::serve(listener, app);
        let client = async move {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                b"GET /v1/members/0190a000-secret-id?phone=13800138000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            out
        };
        let answer = tokio::select! {
            r = server => panic!("server ended: {r:?}"),
            a = client => a,
        };
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        let log = String::from_utf8_lossy(&sink.0.lock().map(|v| v.clone()).unwrap_or_default())
            .to_string();
        assert!(log.contains("route=\"/v1/members/{id}\""), "{log}");
        assert!(log.contains("status=200"), "{log}");
        assert!(!log.contains("13800138000"), "{log}");
        assert!(!log.contains("secret-id"), "{log}");
    }
}
