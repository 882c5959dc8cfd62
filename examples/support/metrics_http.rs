//! The examples' `--metrics-addr HOST:PORT`: installs `metrics-exporter-prometheus` as the
//! process's recorder and serves its text format at `http://HOST:PORT/metrics` for as long as the
//! example runs. Port 0 takes any free port; the address bound is printed to stderr.
//!
//! The HTTP side is a few lines over a std listener rather than the exporter's own listener, so
//! that the port actually bound can be printed. Each connection is served on its own thread, so
//! a client that connects and sends nothing, or reads its answer slowly, never delays another
//! client's scrape; each one is closed after [`CONNECTION_LIMIT`] at most (every read and write
//! waits only for what is left of it), and at most [`MAX_CONNECTIONS`] are served at once (one
//! more is closed at once, unanswered).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The longest one connection is served: sending its request and reading the answer, together.
pub const CONNECTION_LIMIT: Duration = Duration::from_secs(5);

/// Connections served at once; a scraper needs one, so this only bounds the threads a flood of
/// idle connections can hold (each for [`CONNECTION_LIMIT`] at most).
pub const MAX_CONNECTIONS: usize = 16;

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Parses `HOST:PORT` (a name is resolved; the first address is used), for clap.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Installs the Prometheus recorder and starts serving it on `addr`; returns the address bound.
pub fn serve(addr: SocketAddr) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(nvencode::metrics::names::LATENCY_SECONDS.into()),
            nvencode::metrics::LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("--metrics-addr: cannot listen on {addr}: {e}"))?;
    let local = serve_on(listener, handle)?;
    eprintln!("metrics: serving Prometheus text at http://{local}/metrics");
    Ok(local)
}

/// Serves `handle`'s text at `/metrics` on `listener`, from a thread that accepts for as long as
/// the process runs; each connection on a thread of its own. Returns the address bound.
pub fn serve_on(listener: TcpListener, handle: PrometheusHandle) -> io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    tracing::debug!("metrics: {MAX_CONNECTIONS} connections busy; one closed");
                    continue; // dropped: closed unanswered
                }
                let handle = handle.clone();
                let done = Arc::clone(&busy);
                let spawned = std::thread::Builder::new()
                    .name("metrics-scrape".into())
                    .spawn(move || {
                        if let Err(e) = respond(stream, &handle) {
                            tracing::debug!(error = %e, "metrics scrape failed");
                        }
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    tracing::debug!(error = %e, "metrics: cannot start a scrape thread");
                }
            }
        })?;
    Ok(local)
}

/// What is left of a connection's time, as a socket timeout; an error once none is left (a zero
/// timeout would mean "wait forever" to the socket).
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection not done within {CONNECTION_LIMIT:?}"),
        ))
    } else {
        Ok(left)
    }
}

fn respond(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    // Every read and write below waits at most until this deadline.
    let deadline = Instant::now() + CONNECTION_LIMIT;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request = head.lines().next().unwrap_or_default().split(' ');
    let method = request.next().unwrap_or_default();
    let path = request.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => {
            handle.run_upkeep();
            ("200 OK", handle.render())
        }
        ("GET", _) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut rest = answer.as_bytes();
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.flush()
}
