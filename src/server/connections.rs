//! The accept loop: HTTP/1.1 connections with a bound on how many are open at once and a
//! deadline for every request head, so that clients that connect and send nothing, or trickle
//! their headers (slowloris), are cut after a few seconds instead of holding sockets, file
//! descriptors and memory. Bodies have their own deadline (see `body`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's head (request line and headers), counted
/// from the connection's start or the end of its previous response. Also the idle limit of a
/// kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection is kept, however busy.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// After that, how long the request in hand may take to finish.
const LAST_REQUEST_GRACE: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but incoming connections (the database, GitHub,
/// logs).
const RESERVED_FDS: u64 = 128;
/// The most connections served at once, whatever the descriptor limit.
const MAX_CONNECTIONS: u64 = 4096;

/// Raises the soft limit of open files to the hard limit (as servers do) and returns how many
/// connections may be open at once, leaving room for the hub's own files and sockets.
pub fn connection_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            1024
        } else {
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            lim.rlim_cur
        }
    };
    let room = soft.saturating_sub(RESERVED_FDS).max(16);
    room.min(MAX_CONNECTIONS) as usize
}

/// Serves `app` on `listener` until `stop` is cancelled (then the listener closes; requests
/// already being answered finish on their own connections). At most `max_connections` are
/// open; further clients wait in the listen backlog until one closes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: not fatal.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            // A connection lives at most CONNECTION_LIFETIME (then it finishes the request in
            // hand, for up to LAST_REQUEST_GRACE): a client that never reads its answers
            // cannot hold a slot for ever.
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(LAST_REQUEST_GRACE, connection).await;
                }
            }
            drop(slot);
        });
    }
}
