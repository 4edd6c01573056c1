//! The alert log: JSON Lines, one object per line, for `tail -F | jq`.
//!
//! Lines are written by one thread, in the order they were emitted, in batches of whole lines,
//! so a reader never sees half an object. Sequence numbers and event ids are given by that
//! thread, so `seq` always grows down the file. When the file is renamed or removed (log
//! rotation), the next write notices and opens a new file at the configured path: a rotation
//! loses nothing. Writing never blocks a request: emitting is a channel send.
//!
//! A write can fail part-way (the disk is full, a quota is reached). The lines that went out
//! whole stay; the piece of a line that went out with them is cut off again, so the file still
//! ends on a line boundary; the lines that did not go out are dropped, counted in
//! `sessionwatch_alert_lines_dropped_total` and reported once on the log (not once per line,
//! which would flood it while the disk stays full). Their sequence numbers stay unused, so a
//! reader sees the gap. Once writing works again the file goes on where it was.
//!
//! A reload may move the log ([`AlertLog::retarget`]): the lines emitted before go where they
//! were going, the new file is opened before anything is written to it, and if it cannot be
//! opened the log stays where it is.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use metrics::Counter;
use serde_json::{Map, Value};

use crate::report::lines::AlertLine;

enum Command {
    Line(Box<AlertLine>),
    Flush(mpsc::Sender<()>),
    Retarget(AlertTargets, mpsc::Sender<io::Result<()>>),
}

/// Handle to the writer thread. Cloning shares the writer.
#[derive(Clone, Debug)]
pub(crate) struct AlertLog {
    tx: mpsc::Sender<Command>,
}

/// Owns the writer thread; dropping it after the last [`AlertLog`] lets the thread finish.
#[derive(Debug)]
pub(crate) struct AlertLogWriter {
    // Only the tests wait for the thread to end; the proxy flushes instead (see
    // `RunningProxy::shutdown`), since a join waits for every `AlertLog` handle to go.
    #[cfg_attr(not(test), allow(dead_code))]
    thread: Option<JoinHandle<()>>,
}

impl AlertLogWriter {
    /// Wait until every line sent so far is written and the thread has ended (all `AlertLog`
    /// handles must be dropped first, or this waits for them).
    #[cfg(test)]
    fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertTargets {
    /// The JSON Lines file.
    pub(crate) file: Option<PathBuf>,
    /// Standard output too.
    pub(crate) stdout: bool,
}

impl AlertLog {
    /// Start the writer; lines the file could not take are counted in `dropped`. Fails only if
    /// the file cannot be opened at start, so a bad path is reported before the proxy takes
    /// traffic.
    pub(crate) fn start(
        targets: AlertTargets,
        dropped: Counter,
    ) -> std::io::Result<(AlertLog, AlertLogWriter)> {
        let file = match &targets.file {
            Some(path) => Some(OpenFile::open(path)?),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sessionwatch-alert-log".into())
            .spawn(move || writer(rx, file, targets.stdout, dropped))?;
        Ok((
            AlertLog { tx },
            AlertLogWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Queue a line. Never blocks.
    pub(crate) fn emit(&self, line: AlertLine) {
        let _ = self.tx.send(Command::Line(Box::new(line)));
    }

    /// Write the lines emitted from now on to `targets` (a reload): the new file is opened
    /// first, and if that fails the log stays where it was and the error is returned. Waits
    /// for the writer to get there, as [`AlertLog::flush`] does.
    pub(crate) fn retarget(&self, targets: AlertTargets) -> io::Result<()> {
        let stopped = || io::Error::other("the alert log writer has stopped");
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Command::Retarget(targets, tx))
            .map_err(|_| stopped())?;
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Wait until every line queued before this call is written.
    pub(crate) fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

struct OpenFile {
    path: PathBuf,
    file: File,
    ino: u64,
    /// Bytes of a line cut short at the end of the file, still to be cut off.
    torn: u64,
    /// Lines dropped since writing last worked, or `None` while it works.
    failing: Option<u64>,
}

/// A batch, or part of one, that the file did not take.
struct Unwritten {
    /// Whole lines that did not go out.
    lines: u64,
    error: io::Error,
}

impl OpenFile {
    fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let ino = file.metadata()?.ino();
        Ok(Self {
            path: path.to_owned(),
            file,
            ino,
            torn: 0,
            failing: None,
        })
    }

    /// Reopen when the path no longer names the file we hold (renamed or deleted by rotation).
    fn follow_rotation(&mut self) {
        let current = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        if current != Some(self.ino) {
            // The old file keeps no piece of a line either.
            let _ = self.cut_torn_tail();
            match OpenFile::open(&self.path) {
                Ok(f) => {
                    let failing = self.failing;
                    *self = f;
                    self.failing = failing;
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the alert log after rotation")
                }
            }
        }
    }

    /// Cut off the piece of a line a failed write left at the end of the file.
    fn cut_torn_tail(&mut self) -> io::Result<()> {
        if self.torn > 0 {
            let len = self.file.metadata()?.len();
            self.file.set_len(len.saturating_sub(self.torn))?;
            self.torn = 0;
        }
        Ok(())
    }

    /// Append `buf`, whole lines each ending in a newline. On a failure the file is left ending
    /// on a line boundary (or, if even that fails, remembers what to cut before the next write).
    fn append(&mut self, buf: &[u8]) -> Result<(), Unwritten> {
        let all_lines = || buf.iter().filter(|b| **b == b'\n').count() as u64;
        // Writing after a torn piece would glue a good line to it.
        if let Err(error) = self.cut_torn_tail() {
            return Err(Unwritten {
                lines: all_lines(),
                error,
            });
        }
        let mut sent = 0;
        let error = loop {
            if sent == buf.len() {
                return Ok(());
            }
            match self.file.write(&buf[sent..]) {
                Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        let whole = buf[..sent]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        self.torn = (sent - whole) as u64;
        // If this fails too, the next append tries again before writing.
        let _ = self.cut_torn_tail();
        let lines = buf[whole..].iter().filter(|b| **b == b'\n').count() as u64;
        Err(Unwritten { lines, error })
    }

    /// Write a batch, counting and reporting what the file would not take.
    fn write_batch(&mut self, buf: &[u8], dropped: &Counter) {
        match self.append(buf) {
            Ok(()) => {
                if let Some(lost) = self.failing.take() {
                    tracing::warn!(path = %self.path.display(), dropped = lost, "the alert log is written again; lines were dropped meanwhile");
                }
            }
            Err(Unwritten { lines, error }) => {
                dropped.increment(lines);
                match self.failing.as_mut() {
                    Some(lost) => *lost += lines,
                    None => {
                        tracing::error!(
                            path = %self.path.display(),
                            %error,
                            dropped = lines,
                            "cannot write the alert log; dropping lines until it can be written \
                             (counted in sessionwatch_alert_lines_dropped_total)"
                        );
                        self.failing = Some(lines);
                    }
                }
            }
        }
    }
}

fn writer(
    rx: mpsc::Receiver<Command>,
    mut file: Option<OpenFile>,
    mut stdout: bool,
    dropped: Counter,
) {
    let process = uuid::Uuid::now_v7();
    let mut seq: u64 = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Batch whatever is already queued into one write.
        while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
            match cmd {
                Command::Line(line) => {
                    seq += 1;
                    render(&mut buf, &line, seq, &process);
                }
                Command::Flush(done) => waiters.push(done),
                Command::Retarget(targets, done) => {
                    // What came before goes where it was going.
                    write_out(&mut buf, file.as_mut(), stdout, &dropped);
                    let opened = match &targets.file {
                        Some(path) => OpenFile::open(path).map(Some),
                        None => Ok(None),
                    };
                    let _ = done.send(opened.map(|opened| {
                        file = opened;
                        stdout = targets.stdout;
                    }));
                }
            }
            if buf.len() > 1 << 20 {
                break;
            }
        }
        write_out(&mut buf, file.as_mut(), stdout, &dropped);
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Write the batch in `buf` to the file and standard output, and empty it.
fn write_out(buf: &mut Vec<u8>, file: Option<&mut OpenFile>, stdout: bool, dropped: &Counter) {
    if buf.is_empty() {
        return;
    }
    if let Some(f) = file {
        f.follow_rotation();
        f.write_batch(buf, dropped);
    }
    if stdout {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(buf);
        let _ = out.flush();
    }
    buf.clear();
}

fn render(buf: &mut Vec<u8>, line: &AlertLine, seq: u64, process: &uuid::Uuid) {
    let mut obj = Map::with_capacity(line.fields.len() + 4);
    obj.insert("type".into(), Value::from(line.kind.as_str()));
    obj.insert(
        "time".into(),
        Value::from(humantime::format_rfc3339_millis(line.time).to_string()),
    );
    // Unique across restarts: the writer's own v7 UUID prefix plus the sequence number.
    obj.insert(
        "event_id".into(),
        Value::from(format!("{}-{seq}", process.simple())),
    );
    obj.insert("seq".into(), Value::from(seq));
    for (k, v) in &line.fields {
        obj.insert(k.clone(), v.clone());
    }
    if serde_json::to_writer(&mut *buf, &Value::Object(obj)).is_ok() {
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde::Serialize;

    use super::*;
    use crate::report::lines::LineKind;

    #[derive(Serialize)]
    struct Body {
        signal: &'static str,
    }

    #[test]
    fn lines_are_complete_ordered_and_survive_rotation() {
        let dir = std::env::temp_dir().join(format!("sw-alertlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alerts.jsonl");
        let _ = std::fs::remove_file(&path);
        let (log, writer) = AlertLog::start(
            AlertTargets {
                file: Some(path.clone()),
                stdout: false,
            },
            Counter::noop(),
        )
        .unwrap();
        for _ in 0..3 {
            log.emit(AlertLine::new(
                LineKind::SessionReset,
                SystemTime::now(),
                &Body { signal: "cleared" },
            ));
        }
        log.flush();
        std::fs::rename(&path, dir.join("alerts.jsonl.1")).unwrap();
        for _ in 0..2 {
            log.emit(AlertLine::new(
                LineKind::SessionReset,
                SystemTime::now(),
                &Body { signal: "reissued" },
            ));
        }
        drop(log);
        writer.join();
        let old = std::fs::read_to_string(dir.join("alerts.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = old
            .lines()
            .chain(new.lines())
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let first: Value = serde_json::from_str(old.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "session_reset");
        assert_eq!(first["signal"], "cleared");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_ne!(
            first["event_id"],
            serde_json::from_str::<Value>(old.lines().nth(1).unwrap()).unwrap()["event_id"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_retarget_moves_the_next_lines_and_a_file_that_cannot_open_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("sw-alertlog-move-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (first, second) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
        let (log, writer) = AlertLog::start(
            AlertTargets {
                file: Some(first.clone()),
                stdout: false,
            },
            Counter::noop(),
        )
        .unwrap();
        let line =
            |signal| AlertLine::new(LineKind::SessionReset, SystemTime::now(), &Body { signal });
        log.emit(line("cleared"));
        let to = |file: PathBuf| AlertTargets {
            file: Some(file),
            stdout: false,
        };
        log.retarget(to(second.clone())).unwrap();
        log.emit(line("reissued"));
        let err = log.retarget(to(dir.join("missing").join("c.jsonl")));
        assert!(err.is_err());
        log.emit(line("marker"));
        drop(log);
        writer.join();
        let signals = |path: &Path| -> Vec<String> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["signal"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(signals(&first), ["cleared"]);
        assert_eq!(signals(&second), ["reissued", "marker"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
