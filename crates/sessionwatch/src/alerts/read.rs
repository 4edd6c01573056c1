//! Reading the log: splitting bytes into lines, from a file read once, from standard input as
//! it arrives, or from a file followed as it grows (see [`follow`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::line::{BadLine, Line, MAX_LINE_BYTES, parse};

/// Where each line goes; an error (standard output closed) ends the reading.
pub(crate) type Sink<'a> = dyn FnMut(Line) -> io::Result<()> + 'a;

/// Splits a byte stream into lines, keeping a line that has not ended yet for the next chunk.
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    pending: Vec<u8>,
    /// The line being read is past [`MAX_LINE_BYTES`]: drop it up to its newline.
    overlong: bool,
}

impl Splitter {
    pub(crate) fn push(&mut self, mut chunk: &[u8], sink: &mut Sink<'_>) -> io::Result<()> {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            let (head, rest) = chunk.split_at(end);
            chunk = &rest[1..];
            if self.overlong || self.pending.len() + head.len() > MAX_LINE_BYTES {
                self.overlong = false;
                self.pending.clear();
                sink(Line::Bad(BadLine::TooLong))?;
                continue;
            }
            let mut raw = std::mem::take(&mut self.pending);
            raw.extend_from_slice(head);
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
            if !raw.is_empty() {
                sink(parse(raw))?;
            }
        }
        if !self.overlong {
            if self.pending.len() + chunk.len() > MAX_LINE_BYTES {
                self.overlong = true;
                self.pending.clear();
            } else {
                self.pending.extend_from_slice(chunk);
            }
        }
        Ok(())
    }

    /// The stream ended (or the file was rotated away): a last line without a newline is
    /// still a line.
    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> io::Result<()> {
        if std::mem::take(&mut self.overlong) {
            self.pending.clear();
            return sink(Line::Bad(BadLine::TooLong));
        }
        let raw = std::mem::take(&mut self.pending);
        if raw.is_empty() {
            Ok(())
        } else {
            sink(parse(raw))
        }
    }
}

/// Read `reader` to its end, line by line as the bytes arrive (standard input from a pipe hands
/// over what it has, so each line is shown when it comes).
pub(crate) fn all(mut reader: impl Read, sink: &mut Sink<'_>) -> io::Result<()> {
    let mut splitter = Splitter::default();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => splitter.push(&buf[..n], sink)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    splitter.finish(sink)
}

/// How `--follow` polls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowOptions {
    /// How often the file is looked at once everything in it has been read.
    pub(crate) poll: Duration,
    /// End after this long without a new byte (for tests and scripts); `None` follows until a
    /// signal.
    pub(crate) exit_after_idle: Option<Duration>,
}

/// What `follow` says on standard error, as `tail -F` does, when the file changes under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    Waiting,
    Appeared,
    Replaced,
    Truncated,
    Gone,
}

impl Notice {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Notice::Waiting => "does not exist yet; waiting for it",
            Notice::Appeared => "has appeared; following it",
            Notice::Replaced => "has been replaced; following the new file",
            Notice::Truncated => "was truncated; reading it from the start",
            Notice::Gone => "has gone; waiting for a new file",
        }
    }
}

/// The file being read.
struct Held {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read from it.
    offset: u64,
}

impl Held {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        // The identity of the file opened, not of whatever the path names a moment later.
        let meta = file.metadata()?;
        Ok(Self {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset: 0,
        })
    }

    /// Read what has been written since last time; true if anything was.
    fn drain(
        &mut self,
        splitter: &mut Splitter,
        buf: &mut [u8],
        sink: &mut Sink<'_>,
    ) -> io::Result<bool> {
        let mut any = false;
        loop {
            match self.file.read(buf) {
                Ok(0) => return Ok(any),
                Ok(n) => {
                    any = true;
                    self.offset += n as u64;
                    splitter.push(&buf[..n], sink)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Follow `path` like `tail -F`, from its first line: read what is there, then keep reading as
/// it grows, until `stop` resolves or the idle limit passes.
///
/// Rotation: when the path names another file (renamed away and a new one created, or removed
/// and recreated), the old file is read to its end first, then the new one from its start; when
/// the file shrinks below what was read (truncated in place), it is read again from its start.
/// So nothing is lost and nothing read twice, as long as a rotation is seen before the next:
/// with a poll of 200 ms, a log rotated twice within 200 ms loses the middle file, as with
/// `tail -F`; and a truncated file written past the old size within one poll looks unchanged.
pub(crate) async fn follow(
    path: &Path,
    opts: FollowOptions,
    stop: impl std::future::Future<Output = ()>,
    sink: &mut Sink<'_>,
    notice: &mut dyn FnMut(Notice),
) -> io::Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut splitter = Splitter::default();
    let mut buf = vec![0; 64 * 1024];
    let mut held = match Held::open(path) {
        Ok(h) => Some(h),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            notice(Notice::Waiting);
            None
        }
        Err(e) => return Err(e),
    };
    let mut gone = false;
    let mut last_byte = Instant::now();
    loop {
        let mut progress = false;
        if let Some(h) = held.as_mut() {
            progress |= h.drain(&mut splitter, &mut buf, sink)?;
        }
        match std::fs::metadata(path) {
            Ok(meta) => {
                gone = false;
                match held.as_mut() {
                    None => {
                        if let Some(h) = open_if_there(path)? {
                            held = Some(h);
                            notice(Notice::Appeared);
                            progress = true;
                        }
                    }
                    Some(h) if (meta.dev(), meta.ino()) != (h.dev, h.ino) => {
                        // Whatever the writer put in the old file before it moved on.
                        h.drain(&mut splitter, &mut buf, sink)?;
                        splitter.finish(sink)?;
                        match open_if_there(path)? {
                            Some(new) => {
                                held = Some(new);
                                notice(Notice::Replaced);
                            }
                            None => {
                                held = None;
                                notice(Notice::Gone);
                            }
                        }
                        progress = true;
                    }
                    Some(h) => {
                        if h.file.metadata()?.len() < h.offset {
                            splitter.finish(sink)?;
                            h.file.seek(SeekFrom::Start(0))?;
                            h.offset = 0;
                            notice(Notice::Truncated);
                            progress = true;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Keep reading the file held: a writer may still be finishing it.
                if !gone {
                    gone = true;
                    if held.is_some() {
                        notice(Notice::Gone);
                    }
                }
            }
            Err(e) => return Err(e),
        }
        if progress {
            last_byte = Instant::now();
            continue;
        }
        if opts
            .exit_after_idle
            .is_some_and(|idle| last_byte.elapsed() >= idle)
        {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(opts.poll) => {}
            () = &mut stop => break,
        }
    }
    if let Some(h) = held.as_mut() {
        h.drain(&mut splitter, &mut buf, sink)?;
    }
    splitter.finish(sink)
}

/// Open `path`, or `None` if it went away again in between.
fn open_if_there(path: &Path) -> io::Result<Option<Held>> {
    match Held::open(path) {
        Ok(h) => Ok(Some(h)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = Splitter::default();
        let mut sink = |l: Line| {
            out.push(match l {
                Line::Event { raw, .. } | Line::Unknown { raw, .. } => {
                    String::from_utf8_lossy(&raw).into_owned()
                }
                Line::Bad(why) => format!("bad: {why}"),
            });
            Ok(())
        };
        for c in chunks {
            s.push(c, &mut sink).unwrap();
        }
        s.finish(&mut sink).unwrap();
        out
    }

    #[test]
    fn a_line_split_across_reads_is_one_line() {
        assert_eq!(
            split(&[b"{\"type\":\"x\"", b"}\n{\"a\"", b":1}\r\n\n{\"b\":2}"]),
            ["{\"type\":\"x\"}", "{\"a\":1}", "{\"b\":2}"]
        );
    }

    #[test]
    fn an_endless_line_is_dropped_not_buffered() {
        let big = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        let out = split(&[&big, &big, &big, b"\n{\"a\":1}\n"]);
        assert_eq!(out.len(), 2, "{:?}", &out[..1]);
        assert!(out[0].starts_with("bad: longer than"));
        assert_eq!(out[1], "{\"a\":1}");
    }
}
