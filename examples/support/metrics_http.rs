//! The examples' `--metrics-addr HOST:PORT`: installs `metrics-exporter-prometheus` as the
//! process's recorder and serves its text format at `http://HOST:PORT/metrics` for as long as the
//! example runs. Port 0 takes any free port; the address bound is printed to stderr.
//!
//! The HTTP side is a few lines over a std listener rather than the exporter's own listener, so
//! that the port actually bound can be printed. One request at a time; each connection's reads
//! and writes time out after [`IO_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How long one scrape may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

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
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = respond(stream, &handle) {
                    tracing::debug!(error = %e, "metrics scrape failed");
                }
            }
        })?;
    eprintln!("metrics: serving Prometheus text at http://{local}/metrics");
    Ok(local)
}

fn respond(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
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
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
