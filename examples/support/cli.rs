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

/// Set by a second SIGINT/SIGTERM: stop waiting for the encoder, finish the output with what
/// came out so far, and exit.
static QUIT_NOW: AtomicBool = AtomicBool::new(false);

/// Whether a second interrupt asked to finish now, without the frames still in the encoder.
pub fn quit_now() -> bool {
    QUIT_NOW.load(Ordering::SeqCst)
}

/// The first SIGINT/SIGTERM sets the returned flag, which the example reads to stop its source
/// and finish the output (then exit [`INTERRUPTED`]); `doing` says what it finishes. A second
/// one sets [`quit_now`]: the example stops waiting for the encoder (which a hung driver may keep
/// up to its call deadline) and finishes the output with what it has. A third exits at once.
pub fn interrupt_flag(doing: &'static str) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || {
        if !handler_stop.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted: {doing} (interrupt again to finish now)");
        } else if !QUIT_NOW.swap(true, Ordering::SeqCst) {
            eprintln!(
                "interrupted again: finishing the output with what was encoded so far \
                 (interrupt again to quit at once)"
            );
        } else {
            std::process::exit(i32::from(INTERRUPTED));
        }
    }) {
        eprintln!("warning: cannot install the interrupt handler: {e}");
    }
    stop
}

/// How often an output loop looks at [`quit_now`] while it waits for the encoder.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The command line with FFmpeg's `-c:v CODEC` (and `-vcodec CODEC`) written as `--codec CODEC`,
/// which clap cannot take as it is (a short option has one letter): both examples accept
/// FFmpeg's spelling.
pub fn args() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::args_os().map(|arg| {
        if arg == "-c:v" || arg == "-vcodec" {
            std::ffi::OsString::from("--codec")
        } else {
            arg
        }
    })
}
