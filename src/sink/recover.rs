//! [`recover`]: makes a crash-safe MP4 file playable again after it was cut short in any state,
//! by retyping boxes (the writer's own changes are all 4-byte type rewrites, so they can be
//! undone or completed).

use std::io::{Read, Seek, SeekFrom, Write};

use super::{io, SinkError};

/// What [`recover`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Recovered {
    /// Complete fragments the file now shows (0 for a regular file).
    pub fragments: usize,
    /// Box types rewritten.
    pub retyped: usize,
    /// The file ended regular: it was finalized, or its finalization was completed.
    pub regular: bool,
}

/// A complete top-level box: offset, size, type, and the type of its first child.
#[derive(Debug, Clone, Copy)]
struct TopBox {
    at: u64,
    size: u64,
    kind: [u8; 4],
    child: [u8; 4],
}

/// The offset and type of a box cut short by the end of the file.
type CutBox = (u64, [u8; 4]);

/// The complete top-level boxes of `file`, and the last box if the end of the file cuts it
/// short (and its header is there).
fn read_boxes<F: Read + Seek>(file: &mut F) -> Result<(Vec<TopBox>, Option<CutBox>), SinkError> {
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(io("finding the file's size"))?;
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 16 <= len {
        let mut head = [0u8; 16];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut head))
            .map_err(io("reading a box header"))?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (size, child_at) = match size32 {
            1 => {
                let mut size = [0u8; 8];
                size.copy_from_slice(&head[8..16]);
                (u64::from_be_bytes(size), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < 8 {
            break;
        }
        if at.checked_add(size).is_none_or(|end| end > len) {
            return Ok((boxes, Some((at, [head[4], head[5], head[6], head[7]]))));
        }
        let mut child = [0u8; 4];
        if size >= child_at + 8 {
            file.seek(SeekFrom::Start(at + child_at + 4))
                .and_then(|_| file.read_exact(&mut child))
                .map_err(io("reading a box header"))?;
        }
        let kind = [head[4], head[5], head[6], head[7]];
        boxes.push(TopBox {
            at,
            size,
            kind,
            child,
        });
        at += size;
    }
    Ok((boxes, None))
}

/// Whether the `moov` at `b` announces fragments (has an `mvex` child).
fn has_mvex<F: Read + Seek>(file: &mut F, b: TopBox) -> Result<bool, SinkError> {
    let mut at = b.at + 8;
    while at + 8 <= b.at + b.size {
        let mut head = [0u8; 8];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut head))
            .map_err(io("reading a box header"))?;
        if &head[4..8] == b"mvex" {
            return Ok(true);
        }
        let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        if size < 8 {
            break;
        }
        at += size;
    }
    Ok(false)
}

/// Makes a file written by [`Mp4Writer`](super::Mp4Writer) (fragmented layout) playable after
/// it was cut short (a power cut, a copy interrupted) or killed in any state, by rewriting box
/// types only:
/// - a file whose regular `moov` is complete at the end has its finalization completed (state 3
///   of the module docs becomes state 4);
/// - otherwise it becomes a fragmented file again, every complete fragment visible: the initial
///   `moov` and each fragment index whose sample data is complete are typed `moov`/`moof`, an
///   index whose sample data was cut is typed `free`.
///
/// The bytes after the last complete box are left as they are (readers ignore them).
///
/// # Errors
/// [`SinkError::Io`] when reading or writing fails; [`SinkError::NotRecoverable`] when the file
/// holds no complete first fragment.
pub fn recover<F: Read + Write + Seek>(file: &mut F) -> Result<Recovered, SinkError> {
    let (boxes, cut) = read_boxes(file)?;
    // The initial moov, live or retyped `free`: first child `mvhd`, with an `mvex`.
    let mut initial = None;
    let mut regular = None;
    for (i, b) in boxes.iter().enumerate() {
        if (&b.kind == b"moov" || &b.kind == b"free") && &b.child == b"mvhd" {
            if has_mvex(file, *b)? {
                initial.get_or_insert(i);
            } else if &b.kind == b"moov" {
                regular = Some(i);
            }
        }
    }
    let Some(initial) = initial else {
        if regular.is_some() {
            return Ok(Recovered {
                regular: true,
                ..Recovered::default()
            });
        }
        return Err(SinkError::NotRecoverable);
    };
    let mut plan: Vec<(u64, [u8; 4])> = Vec::new();
    // An index cut short at the end (FFmpeg refuses the whole file for it) goes first.
    if let Some((at, kind)) = cut {
        if &kind == b"moof" || &kind == b"moov" {
            plan.push((at, *b"free"));
        }
    }
    let mut fragments = 0;
    let complete = |i: usize| boxes.get(i + 1).is_some_and(|m| &m.kind == b"mdat");
    if regular.is_some() {
        // Complete the finalization: no fragment index left, the initial moov last.
        for b in &boxes[initial + 1..] {
            if &b.kind == b"moof" {
                plan.push((b.at, *b"free"));
            }
        }
        if &boxes[initial].kind == b"moov" {
            plan.push((boxes[initial].at, *b"free"));
        }
    } else {
        if !complete(initial) {
            return Err(SinkError::NotRecoverable);
        }
        fragments += 1;
        // Cut indexes typed `free` first, then the initial moov, then the complete fragments
        // in order: each step shows more, none shows a `moof` before the `moov`.
        let mut indexes = Vec::new();
        for (i, b) in boxes.iter().enumerate().skip(initial + 1) {
            if &b.child == b"mfhd" && (&b.kind == b"moof" || &b.kind == b"free") {
                indexes.push((i, complete(i)));
            }
        }
        for &(i, whole) in &indexes {
            if !whole && &boxes[i].kind != b"free" {
                plan.push((boxes[i].at, *b"free"));
            }
        }
        if &boxes[initial].kind != b"moov" {
            plan.push((boxes[initial].at, *b"moov"));
        }
        for &(i, whole) in &indexes {
            fragments += usize::from(whole);
            if whole && &boxes[i].kind != b"moof" {
                plan.push((boxes[i].at, *b"moof"));
            }
        }
    }
    for &(at, kind) in &plan {
        file.seek(SeekFrom::Start(at + 4))
            .and_then(|_| file.write_all(&kind))
            .and_then(|()| file.flush())
            .map_err(io("rewriting a box type"))?;
    }
    Ok(Recovered {
        fragments: if regular.is_some() { 0 } else { fragments },
        retyped: plan.len(),
        regular: regular.is_some(),
    })
}
