//! What both command-line examples set up the same way: logging to standard error and the
//! interrupt that finishes the output instead of losing it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit status after an interruption (SIGINT/SIGTERM), as shells report a death by SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Logs to standard error (standard output may be the stream), filtered by `RUST_LOG`
/// (`nvencode=debug` shows backend selection and what NVENC was initialized with); `warn` when
/// it is unset.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The first SIGINT/SIGTERM sets the returned flag, which the example reads to stop its source
/// and finish the output (then exit [`INTERRUPTED`]); `doing` says what it finishes. A second one
/// exits at once.
pub fn interrupt_flag(doing: &'static str) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || {
        if handler_stop.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!("interrupted: {doing} (interrupt again to quit now)");
    }) {
        eprintln!("warning: cannot install the interrupt handler: {e}");
    }
    stop
}
