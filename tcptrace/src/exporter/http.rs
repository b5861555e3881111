//! The exporter's HTTP side (hyper 1, HTTP/1.1): `/metrics` (OpenMetrics
//! text), `/healthz`, and nothing else. It holds no metrics itself: a
//! scrape is a request to the exporter's loop, which owns every figure
//! and answers with the text of that moment. Once the loop has stopped
//! (shutting down), scrapes get 503 at once; [`Server::stop`] then closes
//! the listening socket and lets every accepted request finish, so a
//! scraper sees an answer or a refused connection, never a connection
//! closed without a reply.
//!
//! Bounded: at most `MAX_CONNECTIONS` at a time (more are closed at
//! accept), headers within 10 s, a connection at most 60 s.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
    task::JoinHandle,
};

/// OpenMetrics text, as Prometheus asks for it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections served at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);

/// A scrape waiting for the exporter's loop: reply with the exposition.
pub struct Scrape {
    /// Where the text goes.
    pub reply: oneshot::Sender<String>,
}

/// How long [`Server::stop`] waits for accepted requests to be answered
/// (a 503 takes microseconds; a client that connected but never sends
/// is not worth holding the exit for).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The running HTTP side: [`serve`] starts it, [`Server::stop`] ends it.
pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Serves `listener` until [`Server::stop`], sending each `/metrics`
/// request to `scrapes`.
pub fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>) -> Server {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let graceful = GracefulShutdown::new();
        loop {
            let stream = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of file descriptors and the like: wait, go on.
                        log::debug!("accept: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                log::debug!("too many connections: one closed");
                continue;
            };
            let scrapes = scrapes.clone();
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(req, scrapes.clone())),
                );
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Ok(Err(err)) = tokio::time::timeout(CONNECTION_LIMIT, connection).await {
                    log::debug!("http connection: {err}");
                }
                drop(slot);
            });
        }
        // New connections are refused from here on (the kernel resets
        // those still queued); idle ones close, requests being read or
        // answered finish.
        drop(listener);
        if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            log::debug!("http: connections still open after {STOP_GRACE:?}");
        }
    });
    Server { stop, task }
}

impl Server {
    /// Stops accepting and waits (at most [`STOP_GRACE`]) until every
    /// accepted request has its answer.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn answer(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<Scrape>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match req.uri().path() {
        "/metrics" if get => {
            let (reply, text) = oneshot::channel();
            let text = match scrapes.send(Scrape { reply }).await {
                Ok(()) => text.await.ok(),
                Err(_) => None,
            };
            match text {
                Some(text) => respond(StatusCode::OK, OPENMETRICS, text),
                None => stopping(),
            }
        }
        "/healthz" if get => {
            if scrapes.is_closed() {
                stopping()
            } else {
                respond(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        "/" if get => respond(
            StatusCode::OK,
            "text/plain",
            "tcptrace exporter: /metrics (OpenMetrics), /healthz\n".into(),
        ),
        "/metrics" | "/healthz" | "/" => {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

fn stopping() -> Response<Full<Bytes>> {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "tcptrace is shutting down\n".into(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
