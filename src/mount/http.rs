//! `--metrics`: the Prometheus text of the process's counters over HTTP.

use super::config::MountError;
use super::view::View;
use std::sync::Arc;

/// Binds the metrics address before anything is mounted, so that a bad one
/// refuses the mount with nothing left behind.
pub(super) fn bind_metrics(addr: &str) -> Result<tiny_http::Server, MountError> {
    let addr = if addr.parse::<u16>().is_ok() {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_string()
    };
    tiny_http::Server::http(&addr).map_err(|e| {
        MountError(format!(
            "cannot serve metrics on {addr}: {e} (give --metrics HOST:PORT, or a free port for loopback)"
        ))
    })
}

/// Answers `GET /metrics` with the Prometheus text of every counter.
pub(super) fn serve_metrics(server: tiny_http::Server, view: Arc<View>) -> Result<(), MountError> {
    let content_type: tiny_http::Header =
        "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            .parse()
            .expect("a valid header");
    std::thread::Builder::new()
        .name("walfs-metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let reply = if req.url() == "/metrics" {
                    let m = crate::metrics::global();
                    m.open_handles.set(view.open_handles() as i64);
                    tiny_http::Response::from_string(m.encode())
                        .with_header(content_type.clone())
                        .boxed()
                } else {
                    tiny_http::Response::from_string("walfs serves /metrics\n")
                        .with_status_code(404)
                        .boxed()
                };
                let _ = req.respond(reply);
            }
        })
        .map(|_| ())
        .map_err(|e| MountError(format!("cannot start the metrics thread: {e}")))
}
