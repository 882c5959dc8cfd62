//! The examples' `/metrics` endpoint (`examples/support/metrics_http.rs`): one slow client does
//! not hold up another client's scrape, and an idle connection is closed within its bound.

// The examples' own module, compiled here as they compile it: `serve` (which installs the
// process-wide recorder) and `parse_addr` are theirs; this test serves a recorder of its own.
#[allow(dead_code)]
#[path = "../examples/support/metrics_http.rs"]
mod metrics_http;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;

/// How long a scrape may take while another client sits idle: well under the connection limit
/// that the idle client is given (5 s), with room for a loaded machine.
const SCRAPE_BOUND: Duration = Duration::from_millis(1500);

/// A scrape of `addr` with every wait bounded by `bound`; the answer, whole.
fn scrape(addr: std::net::SocketAddr, bound: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, bound)?;
    stream.set_read_timeout(Some(bound))?;
    stream.set_write_timeout(Some(bound))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A client that connects and sends nothing does not delay a second client's scrape, and its
/// own connection is closed once the connection limit has passed. Checked against the endpoint
/// serving one connection at a time, where the scrape waited for the idle client's 5 s read
/// timeout.
#[test]
fn an_idle_client_does_not_delay_another_scrape() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("encoder_frames_total").increment(7);
    });
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = metrics_http::serve_on(listener, handle).expect("serve");

    let mut idle = TcpStream::connect(addr).expect("idle client connects");
    // Let the server take the idle connection first, as a slow client that came first would.
    std::thread::sleep(Duration::from_millis(100));
    let idle_since = Instant::now();
    for _ in 0..2 {
        let started = Instant::now();
        let answer = scrape(addr, SCRAPE_BOUND).unwrap_or_else(|e| {
            panic!(
                "no scrape within {SCRAPE_BOUND:?} while a client sat idle: {e} (after {:?})",
                started.elapsed()
            )
        });
        let took = started.elapsed();
        assert!(took < SCRAPE_BOUND, "the scrape took {took:?}");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("encoder_frames_total 7"), "{answer}");
    }

    // The idle connection is closed, unanswered, once its limit has passed (EOF, or a reset).
    let bound = metrics_http::CONNECTION_LIMIT + Duration::from_secs(5);
    idle.set_read_timeout(Some(bound)).expect("timeout");
    let mut rest = Vec::new();
    let read = idle.read_to_end(&mut rest);
    let closed_after = idle_since.elapsed();
    assert!(
        read.is_ok_and(|n| n == 0) || rest.is_empty(),
        "the idle client was answered: {rest:?}"
    );
    assert!(
        closed_after < bound,
        "the idle connection was still open after {closed_after:?}"
    );
}
