//! Where an example's stream goes, shared by `encode_yuv` and `pipeline`: what a user already has
//! is never replaced by less.
//!
//! A regular file is written under a temporary name in its own folder and renamed into place at
//! the end, so an existing file is never emptied up front and never replaced by less than a
//! whole run: a run that encoded nothing leaves it as it was (the temporary file is removed),
//! and a run that failed after encoding some frames keeps them beside it
//! (`NAME.partial.EXT`). Standard output (`-`, or `/dev/stdout` and any other name of the file
//! standard output is, which keeps the shell's append mode), devices and pipes are written
//! directly. MP4 is chosen by the `.mp4` / `.m4v` extension or by `--format mp4`.
//!
//! MP4 is crash-safe (fragmented, finalized into a regular MP4 at the end: see
//! `nvencode::sink`). An MP4 file is put under the name the user gave as soon as it holds one
//! complete fragment, so a recording killed outright is found there, playable up to its last
//! fragment; an existing file is replaced only then, never by a file with no frame. Standard
//! output, pipes and devices get the fragments as they are written (nothing to seek back to).
//!
//! The temporary file is `.NAME.PID.XXXXXX.part` beside the output (hidden; `NAME` the output's
//! file name, `PID` the writing process, `XXXXXX` six random letters and digits). A run killed
//! outright (SIGKILL, a power cut) leaves it behind; the next run writing the same output removes
//! each such file whose process is gone (one whose process still runs, or whose PID was reused
//! by another process, is left alone).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use std::time::Duration;

use nvencode::sink::{Durability, Mp4Options, Mp4Writer};
use nvencode::{EncodedChunk, Resolution};

/// Errors are messages for the user, naming the output; each example wraps them in its own type.
type BoxError = String;

pub fn stdout_metadata() -> Option<fs::Metadata> {
    File::from(io::stdout().as_fd().try_clone_to_owned().ok()?)
        .metadata()
        .ok()
}

/// True when both name the same file (device and inode), whatever their names.
pub fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Where the stream goes. A regular file is written under a temporary name in its own folder and
/// renamed into place at the end, so an existing file is never emptied up front and never
/// replaced by less than a whole run: a run that encoded nothing leaves it as it was (the
/// temporary file is removed), and a run that failed after encoding some frames keeps them beside
/// it (`NAME.partial.EXT`). Standard output (`-o -`, or `/dev/stdout` and any other name of the
/// file standard output is, which keeps the shell's append mode), devices and pipes are written
/// directly.
pub enum Sink {
    Stdout(BufWriter<io::Stdout>),
    Direct {
        out: BufWriter<File>,
        path: PathBuf,
    },
    Replace {
        out: BufWriter<tempfile::NamedTempFile>,
        path: PathBuf,
        /// Whether a file of that name existed when the run started.
        existed: bool,
    },
    /// An MP4 file, written under a temporary name (`tmp`) until it holds one complete
    /// fragment, then under its own name.
    Mp4 {
        out: Mp4Writer<BufWriter<File>>,
        tmp: Option<tempfile::TempPath>,
        path: PathBuf,
        existed: bool,
    },
    /// Fragmented MP4 onto standard output, a pipe or a device.
    Mp4Stream {
        out: Mp4Writer<BufWriter<Box<dyn Write>>>,
        name: String,
    },
}

/// How a run ended, for what becomes of its output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every frame read was encoded (or the user interrupted and all read frames were).
    Complete,
    /// An error ended the run after `chunks` chunks were written.
    Failed { chunks: u64 },
}

/// `out.h264` -> `out.partial.h264`: where a failed run keeps its frames beside an existing file.
fn partial_name(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.partial.{}", ext.to_string_lossy()),
        None => format!("{stem}.partial"),
    };
    path.with_file_name(name)
}

/// The longest part of the output's name that goes into its temporary file's name, in bytes:
/// with the PID, the random part and the dots, the name stays within a file name's 255 bytes.
const TEMP_NAME_MAX: usize = 200;

/// `.NAME.`: how the temporary files of the output `path` begin (then `PID.XXXXXX.part`).
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut end = name.len().min(TEMP_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.", &name[..end])
}

/// The PID in `file_name` if it is a temporary file of the output whose files begin with
/// `prefix`: `PREFIX` `PID` `.` six letters and digits `.part`, nothing else (so another
/// output's files, whose names go on after this one's, never match).
fn temp_pid(file_name: &str, prefix: &str) -> Option<i32> {
    let middle = file_name.strip_prefix(prefix)?.strip_suffix(".part")?;
    let (pid, random) = middle.split_once('.')?;
    let random_ok = random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric());
    let pid_ok = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if !(random_ok && pid_ok) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is gone: `kill(pid, 0)` finds no such process. A process of another
/// user (EPERM) or any other answer counts as alive, so its file is kept.
fn process_gone(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH),
        None => false,
    }
}

/// Removes the temporary files that killed runs writing the output `path` left in `dir` (those
/// whose process is gone), saying so on standard error. Best effort: a folder that cannot be
/// listed, or a file that cannot be removed, is left as it is.
fn remove_stale_temporaries(dir: &Path, path: &Path) {
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_pid(n, &prefix)) else {
            continue;
        };
        if !process_gone(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let stale = entry.path();
        match fs::remove_file(&stale) {
            Ok(()) => eprintln!(
                "removed {}, left by an earlier run (process {pid}, no longer running) writing {}",
                stale.display(),
                path.display()
            ),
            Err(e) => eprintln!(
                "cannot remove stale temporary file {}: {e}",
                stale.display()
            ),
        }
    }
}

/// The container options both examples take.
#[derive(clap::Args, Debug, Clone)]
pub struct Mp4Args {
    /// Container: mp4 or h264 (Annex B). Default: mp4 for a .mp4/.m4v output name, h264
    /// otherwise; `-o - --format mp4` streams fragmented MP4 to standard output.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Container>,
    /// Longest MP4 fragment, in seconds: a recording killed outright loses at most about this
    /// much (plus the frames still in the encoder).
    #[arg(
        long = "fragment-duration",
        value_name = "SECONDS",
        default_value_t = 1.0
    )]
    pub fragment_duration: f64,
    /// Sync each MP4 fragment to the disk (fdatasync): survives a power cut, at the cost of a
    /// disk flush per fragment. Default: flushed to the OS, which survives a killed process.
    #[arg(long)]
    pub fsync: bool,
}

/// The container of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    AnnexB,
    Mp4,
}

fn parse_format(s: &str) -> Result<Container, String> {
    match s {
        "mp4" => Ok(Container::Mp4),
        "h264" | "annexb" => Ok(Container::AnnexB),
        _ => Err(format!("format {s:?} (expected mp4 or h264)")),
    }
}

/// What an MP4 file needs to know up front: the frame size, the timestamps' unit, and the
/// options the user gave.
#[derive(Clone)]
pub struct Mp4Params {
    pub resolution: Resolution,
    pub time_base: (u32, u32),
    pub args: Mp4Args,
}

impl Mp4Params {
    fn options(&self) -> Result<Mp4Options, BoxError> {
        let secs = self.args.fragment_duration;
        let (min, max) = (Mp4Options::MIN_FRAGMENT, Mp4Options::MAX_FRAGMENT);
        let duration = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| (min..=max).contains(d))
            .ok_or_else(|| {
                format!(
                    "--fragment-duration {secs} is out of range: expected {} to {} seconds",
                    min.as_secs_f64(),
                    max.as_secs_f64()
                )
            })?;
        Ok(Mp4Options::default()
            .with_fragment_duration(duration)
            .with_durability(if self.args.fsync {
                Durability::Sync
            } else {
                Durability::Flush
            }))
    }
}

/// True for an output that is to be MP4: `--format`, else the `.mp4` / `.m4v` extension.
fn wants_mp4(output: &Path, format: Option<Container>) -> bool {
    match format {
        Some(c) => c == Container::Mp4,
        None => output
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("mp4") || e.eq_ignore_ascii_case("m4v")),
    }
}

/// A fragmented MP4 stream onto `out` (standard output, a pipe, a device).
fn mp4_stream(out: Box<dyn Write>, p: &Mp4Params, name: String) -> Result<Sink, BoxError> {
    let opts = p.options()?;
    if opts.durability == Durability::Sync {
        return Err(format!(
            "--fsync needs a file, and {name} is not a regular file"
        ));
    }
    let out = Mp4Writer::stream(BufWriter::new(out), p.resolution, p.time_base, opts)
        .map_err(|e| format!("cannot start MP4 output {name}: {e}"))?;
    Ok(Sink::Mp4Stream { out, name })
}

impl Sink {
    pub fn open(
        output: &Path,
        input: Option<&fs::Metadata>,
        mp4: Mp4Params,
    ) -> Result<Sink, BoxError> {
        let mp4 = wants_mp4(output, mp4.args.format).then_some(mp4);
        if let Some(p) = &mp4 {
            p.options().map(drop)?;
        }
        if output.as_os_str() == "-" {
            if let (Some(input), Some(stdout)) = (input, stdout_metadata()) {
                if stdout.is_file() && same_file(input, &stdout) {
                    return Err(
                        "standard output is the input file: refusing to overwrite it".to_owned(),
                    );
                }
            }
            if let Some(p) = &mp4 {
                return mp4_stream(Box::new(io::stdout()), p, "standard output".into());
            }
            return Ok(Sink::Stdout(BufWriter::new(io::stdout())));
        }
        let existing = match fs::metadata(output) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot use output {}: {e}", output.display())),
        };
        // `/dev/stdout`, `/proc/self/fd/1` or the redirected file's own name: standard output
        // itself, written through the descriptor the shell opened (`>>` appends, a pipe stays a
        // pipe), never replaced under it.
        if mp4.is_none() {
            if let (Some(existing), Some(stdout)) = (&existing, stdout_metadata()) {
                if same_file(existing, &stdout) {
                    if let Some(input) = input {
                        if same_file(input, &stdout) {
                            return Err(format!(
                                "output {} is the input file: refusing to overwrite it",
                                output.display()
                            ));
                        }
                    }
                    return Ok(Sink::Stdout(BufWriter::new(io::stdout())));
                }
            }
        }
        if let (Some(input), Some(existing)) = (input, &existing) {
            if same_file(input, existing) {
                return Err(format!(
                    "output {} is the input file: refusing to overwrite it",
                    output.display()
                ));
            }
        }
        match existing {
            Some(meta) if meta.is_dir() => {
                Err(format!("output {} is a directory", output.display()))
            }
            Some(meta) if !meta.is_file() => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(output)
                    .map_err(|e| format!("cannot open output {}: {e}", output.display()))?;
                if let Some(p) = &mp4 {
                    return mp4_stream(Box::new(file), p, output.display().to_string());
                }
                Ok(Sink::Direct {
                    out: BufWriter::new(file),
                    path: output.to_path_buf(),
                })
            }
            existing => {
                let existed = existing.is_some();
                // Through symlinks, to the real file.
                let path = match existing {
                    Some(_) => fs::canonicalize(output)
                        .map_err(|e| format!("cannot resolve output {}: {e}", output.display()))?,
                    None => output.to_path_buf(),
                };
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                remove_stale_temporaries(&dir, &path);
                let tmp = tempfile::Builder::new()
                    .prefix(&format!("{}{}.", temp_prefix(&path), std::process::id()))
                    .rand_bytes(6)
                    .suffix(".part")
                    .tempfile_in(&dir)
                    .map_err(|e| {
                        format!(
                            "cannot create a temporary file in {} for output {}: {e}",
                            dir.display(),
                            output.display()
                        )
                    })?;
                // A new file gets the usual rw-r--r--, a replaced one keeps its permissions.
                let perms = existing.map_or_else(
                    || std::os::unix::fs::PermissionsExt::from_mode(0o644),
                    |m| m.permissions(),
                );
                tmp.as_file()
                    .set_permissions(perms)
                    .map_err(|e| format!("cannot create output {}: {e}", output.display()))?;
                match mp4 {
                    Some(p) => {
                        let cannot = |e: &dyn std::fmt::Display| {
                            format!("cannot start MP4 output {}: {e}", output.display())
                        };
                        let (file, tmp) = tmp.into_parts();
                        let out = Mp4Writer::with_options(
                            BufWriter::new(file),
                            p.resolution,
                            p.time_base,
                            p.options()?,
                        )
                        .map_err(|e| cannot(&e))?
                        .with_sync();
                        Ok(Sink::Mp4 {
                            out,
                            tmp: Some(tmp),
                            path,
                            existed,
                        })
                    }
                    None => Ok(Sink::Replace {
                        out: BufWriter::new(tmp),
                        path,
                        existed,
                    }),
                }
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Sink::Stdout(_) => "standard output".to_owned(),
            Sink::Mp4Stream { name, .. } => name.clone(),
            Sink::Direct { path, .. } | Sink::Replace { path, .. } | Sink::Mp4 { path, .. } => {
                path.display().to_string()
            }
        }
    }

    pub fn write_chunks(&mut self, chunks: &mut Vec<EncodedChunk>) -> Result<u64, BoxError> {
        let mut bytes = 0;
        for chunk in chunks.drain(..) {
            let written: Result<(), Box<dyn std::fmt::Display>> = match self {
                Sink::Stdout(out) => out.write_all(&chunk.data).map_err(|e| Box::new(e) as _),
                Sink::Direct { out, .. } => {
                    out.write_all(&chunk.data).map_err(|e| Box::new(e) as _)
                }
                Sink::Replace { out, .. } => {
                    out.write_all(&chunk.data).map_err(|e| Box::new(e) as _)
                }
                Sink::Mp4 { out, .. } => out.write(&chunk).map_err(|e| Box::new(e) as _),
                Sink::Mp4Stream { out, .. } => out.write(&chunk).map_err(|e| Box::new(e) as _),
            };
            written.map_err(|e| format!("cannot write {}: {e}", self.name()))?;
            bytes += chunk.data.len() as u64;
        }
        self.put_in_place()?;
        Ok(bytes)
    }

    /// Once an MP4 file holds a complete fragment, puts it under its own name (replacing an
    /// existing file), so that a recording killed from then on is found there.
    fn put_in_place(&mut self) -> Result<(), BoxError> {
        if let Sink::Mp4 { out, tmp, path, .. } = self {
            if out.fragments() > 0 {
                if let Some(t) = tmp.take() {
                    t.persist(&*path).map_err(|e| {
                        format!(
                            "cannot put the recording in place as {}: {e}",
                            path.display()
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Flushes, and puts a file written under a temporary name where `ending` says: into place
    /// for a complete run or a new file; beside an existing file (`NAME.partial.EXT`) for a run
    /// that failed after writing something; nowhere for a run that wrote nothing (the existing
    /// file is left as it was). Returns what became of the output, in words.
    pub fn finish(self, ending: Ending) -> Result<String, BoxError> {
        let name = self.name();
        let fail = |e: &dyn std::fmt::Display| -> BoxError { format!("cannot write {name}: {e}") };
        let (tmp, path, existed) = match self {
            Sink::Stdout(mut out) => {
                out.flush().map_err(|e| fail(&e))?;
                return Ok(name);
            }
            Sink::Direct { mut out, .. } => {
                out.flush().map_err(|e| fail(&e))?;
                return Ok(name);
            }
            Sink::Mp4Stream { out, .. } => {
                out.finish().map_err(|e| fail(&e))?;
                return Ok(name);
            }
            Sink::Mp4 {
                out,
                tmp: None,
                path,
                ..
            } => {
                // Already in place: finalized there, whatever the ending (it holds at least
                // one fragment, and every frame written).
                out.finish().map_err(|e| fail(&e))?;
                return Ok(path.display().to_string());
            }
            Sink::Replace { path, existed, .. } | Sink::Mp4 { path, existed, .. }
                if ending == (Ending::Failed { chunks: 0 }) =>
            {
                // Dropping the sink removes its temporary file.
                return Ok(if existed {
                    format!("nothing encoded: {} left as it was", path.display())
                } else {
                    format!("nothing encoded: no {} created", path.display())
                });
            }
            Sink::Replace { out, path, existed } => {
                let tmp = out.into_inner().map_err(|e| fail(e.error()))?;
                tmp.as_file().sync_all().map_err(|e| fail(&e))?;
                let (_, tmp) = tmp.into_parts();
                (tmp, path, existed)
            }
            Sink::Mp4 {
                out,
                tmp: Some(tmp),
                path,
                existed,
            } => {
                // Fewer frames than one fragment: finalized under the temporary name first.
                let file = out.finish().map_err(|e| fail(&e))?;
                let file = file.into_inner().map_err(|e| fail(e.error()))?;
                file.sync_all().map_err(|e| fail(&e))?;
                (tmp, path, existed)
            }
        };
        let target = match ending {
            Ending::Failed { .. } if existed => partial_name(&path),
            _ => path.clone(),
        };
        tmp.persist(&target).map_err(|e| fail(&e.error))?;
        Ok(if target == path {
            path.display().to_string()
        } else {
            format!("{} ({} left as it was)", target.display(), path.display())
        })
    }
}

/// Split recording (`--segment-time`): the output pattern and where the files end.
#[allow(dead_code)] // Only encode_yuv splits its output so far; pipeline includes this file too.
pub struct Segments {
    pattern: String,
    index: u32,
    /// The producer's copy: which frames must be IDRs.
    pub segmenter: nvencode::sink::Segmenter,
    /// The writer's copy: which chunk starts the next file.
    pub splitter: nvencode::sink::Segmenter,
}

#[allow(dead_code)] // As above.
impl Segments {
    pub fn new(output: &Path, secs: f64, time_base: (u32, u32)) -> Result<Segments, BoxError> {
        let pattern = output.to_str().unwrap_or_default().to_owned();
        if output.as_os_str() == "-" || !pattern.contains('%') {
            return Err(format!(
                "--segment-time needs an output pattern with %d or %03d, such as seg-%03d.mp4, \
                 not {}",
                output.display()
            ));
        }
        let duration =
            Duration::try_from_secs_f64(secs).map_err(|e| format!("--segment-time {secs}: {e}"))?;
        let segmenter = nvencode::sink::Segmenter::new(duration, time_base)
            .map_err(|e| format!("--segment-time {secs}: {e}"))?;
        let segments = Segments {
            pattern,
            index: 0,
            segmenter,
            splitter: segmenter,
        };
        segments.name(0)?;
        Ok(segments)
    }

    /// The name of file `n`: the pattern's `%d` or `%0Nd` replaced by `n`.
    pub fn name(&self, n: u32) -> Result<PathBuf, BoxError> {
        let bad = || {
            format!(
                "output pattern {} (expected one %d or %0Nd, such as seg-%03d.mp4)",
                self.pattern
            )
        };
        let start = self.pattern.find('%').ok_or_else(bad)?;
        let rest = &self.pattern[start + 1..];
        let end = rest.find('d').ok_or_else(bad)?;
        let spec = &rest[..end];
        let width: usize = match spec {
            "" => 0,
            w if w.starts_with('0') && w.bytes().all(|b| b.is_ascii_digit()) => {
                w.parse().map_err(|_| bad())?
            }
            _ => return Err(bad()),
        };
        let tail = &rest[end + 1..];
        if tail.contains('%') {
            return Err(bad());
        }
        Ok(PathBuf::from(format!(
            "{}{n:0width$}{tail}",
            &self.pattern[..start]
        )))
    }

    /// The name of the next file.
    pub fn next_name(&mut self) -> Result<PathBuf, BoxError> {
        self.index += 1;
        self.name(self.index)
    }
}
