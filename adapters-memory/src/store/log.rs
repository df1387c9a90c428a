//! The event store's append-only log file: one framed record per successful write, replayed at start.
//!
//! Each record is one line: `<length> <crc32> <json>\n`, length and CRC-32 of the JSON as 8 hex digits.
//! The JSON holds a whole append (its events and its idempotency record) or one remembered record, so a
//! write is atomic on disk: a record is either intact or torn, and a torn or corrupt tail (a crash in the
//! middle of a write) is detected by its length or checksum and cut off at the next start.
//! The JSON stays readable: the log is the source of truth and should be inspectable with a text editor.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use rookery_domain::event::decode;
use rookery_domain::{StoredEvent, Timestamp, UserId};
use rookery_ports::IdempotencyWrite;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::{RecordRepr, State};

/// The log file's name inside the data directory.
pub const LOG_FILE: &str = "events.log";

/// `xxxxxxxx xxxxxxxx `: length, space, CRC, space.
const HEADER_LEN: usize = 18;

/// No record is anywhere near this large (an append is at most 4 MB); a larger length is corruption.
const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has the log open (another `rookery serve` on the same data directory).
    #[error("{path} is in use by another process ({reason})")]
    Locked {
        /// The log file.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// The directory or the file could not be created, read, truncated or synced.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// An intact record (its checksum matches) cannot be read: the log was written by a newer build,
    /// or is not a Rookery log. Nothing is dropped in that case; the store refuses to start.
    #[error("{path}: record at byte {offset} cannot be read: {reason}")]
    Unreadable {
        /// The log file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// An idempotency write as the log holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriteRepr {
    owner: UserId,
    record: RecordRepr,
    expired_before: Timestamp,
}

impl WriteRepr {
    fn of(write: &IdempotencyWrite) -> Self {
        Self {
            owner: write.owner.clone(),
            record: RecordRepr::of(&write.record),
            expired_before: write.expired_before,
        }
    }

    fn into_write(self) -> IdempotencyWrite {
        IdempotencyWrite {
            owner: self.owner,
            record: self.record.into_record(),
            expired_before: self.expired_before,
        }
    }
}

/// A record as written (borrowing the events).
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum RecordOut<'a> {
    Append {
        owner: &'a UserId,
        events: &'a [StoredEvent],
        idempotency: Option<WriteRepr>,
    },
    Remember {
        write: WriteRepr,
    },
}

/// A record as read (events still raw, so they go through the domain's upcasting `decode`).
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum RecordIn {
    Append {
        owner: UserId,
        events: Vec<Value>,
        idempotency: Option<WriteRepr>,
    },
    Remember {
        write: WriteRepr,
    },
}

/// The open log file, positioned at its end.
#[derive(Debug)]
pub(crate) struct EventLog {
    file: File,
    path: PathBuf,
    /// The length of the intact log: where the next record starts.
    len: u64,
    /// Set when a sync failed, or a failed write could not be rolled back: the file's tail is unknown, so
    /// nothing more is written.
    broken: bool,
    /// Injected faults (tests only).
    #[cfg(test)]
    pub(crate) faults: Option<std::sync::Arc<Faults>>,
}

/// Frames `json` as one record.
fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + json.len() + 1);
    out.extend_from_slice(format!("{:08x} {:08x} ", json.len(), crc32fast::hash(json)).as_bytes());
    out.extend_from_slice(json);
    out.push(b'\n');
    out
}

fn hex_u32(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// Reads as many bytes as are there, up to `buf.len()`; fewer only at the end of the file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The next intact record's JSON, `Ok(None)` at a clean end or at a torn or corrupt record.
fn next_record(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER_LEN];
    if read_full(reader, &mut header)? < HEADER_LEN || header[8] != b' ' || header[17] != b' ' {
        return Ok(None);
    }
    let (Some(len), Some(crc)) = (hex_u32(&header[..8]), hex_u32(&header[9..17])) else {
        return Ok(None);
    };
    let len = len as usize;
    if len > MAX_RECORD_LEN {
        return Ok(None);
    }
    let mut body = vec![0u8; len + 1];
    if read_full(reader, &mut body)? < body.len() || body.pop() != Some(b'\n') || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(Some(body))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

impl EventLog {
    /// Opens (or creates) the log in `dir`, replays every intact record into a fresh state,
    /// and cuts off a torn or corrupt tail.
    pub(crate) fn open(dir: &Path) -> Result<(Self, State), OpenError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error(&path))?;
        // One process per log: a second writer would interleave records. The lock is released when the
        // file is closed, including when the process dies, so a crash never leaves a stale lock behind.
        file.try_lock().map_err(|e| OpenError::Locked {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !existed {
            // Make the new file's directory entry durable too, or a crash could lose the whole log.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
        }
        let file_len = file.metadata().map_err(io_error(&path))?.len();
        let mut state = State::default();
        let mut reader = BufReader::new(&file);
        let mut intact = 0u64;
        let mut records = 0u64;
        while let Some(json) = next_record(&mut reader).map_err(io_error(&path))? {
            let unreadable = |reason: String| OpenError::Unreadable {
                path: path.clone(),
                offset: intact,
                reason,
            };
            let record: RecordIn = serde_json::from_slice(&json).map_err(|e| unreadable(e.to_string()))?;
            replay(&mut state, record).map_err(unreadable)?;
            intact += (HEADER_LEN + json.len() + 1) as u64;
            records += 1;
        }
        drop(reader);
        if intact < file_len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = file_len - intact,
                kept_records = records,
                "the event log ends in a torn or corrupt record; cutting it off"
            );
            file.set_len(intact).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        tracing::info!(path = %path.display(), records, events = state.commit_count(), "event log replayed");
        Ok((
            Self {
                file,
                path,
                len: intact,
                broken: false,
                #[cfg(test)]
                faults: None,
            },
            state,
        ))
    }

    /// A log writing to an already open `file` as if it were empty (to test failing writes).
    #[cfg(test)]
    pub(crate) fn on_file(file: File, path: PathBuf) -> Self {
        Self {
            file,
            path,
            len: 0,
            broken: false,
            faults: None,
        }
    }

    /// Frames one append as a record at the end of `out`.
    pub(crate) fn encode_append(
        out: &mut Vec<u8>,
        owner: &UserId,
        events: &[StoredEvent],
        idempotency: Option<&IdempotencyWrite>,
    ) -> io::Result<()> {
        encode(
            out,
            &RecordOut::Append {
                owner,
                events,
                idempotency: idempotency.map(WriteRepr::of),
            },
        )
    }

    /// Frames one remembered idempotency record at the end of `out`.
    pub(crate) fn encode_remember(out: &mut Vec<u8>, write: &IdempotencyWrite) -> io::Result<()> {
        encode(
            out,
            &RecordOut::Remember {
                write: WriteRepr::of(write),
            },
        )
    }

    /// Appends `records` (whole framed records, from the `encode_*` functions) to the file and syncs it:
    /// when this returns `Ok`, every one of them is on disk.
    ///
    /// A failed write is cut off again, so the file ends with its last synced record and later writes can
    /// go on. A failed sync leaves the log refusing every later write: the kernel may already have dropped
    /// the unsynced pages and a second sync can report success without writing them (so nothing written
    /// after it could be trusted); restarting replays what really is on disk, and the torn-tail and checksum
    /// rules cut off whatever part of these records did not reach it.
    pub(crate) fn write_synced(&mut self, records: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(format!(
                "{}: an earlier write or sync failed and could not be rolled back; restart to recover",
                self.path.display()
            )));
        }
        if let Err(error) = self.write_all(records) {
            // Cut off whatever part of the records reached the file, so the next record does not follow
            // a torn one (which would hide it, and everything after it, at the next start).
            if self.file.set_len(self.len).and_then(|()| self.sync()).is_err() {
                self.broken = true;
            }
            return Err(error);
        }
        if let Err(error) = self.sync() {
            self.broken = true;
            // Still try to leave the file at its synced length, so a restart finds only acknowledged records;
            // if that fails too, the checksums decide at the next start.
            let _ = self.file.set_len(self.len).and_then(|()| self.file.sync_data());
            return Err(error);
        }
        self.len += records.len() as u64;
        Ok(())
    }

    fn write_all(&mut self, records: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(faults) = &self.faults
            && faults.fail_write.load(std::sync::atomic::Ordering::SeqCst)
        {
            // Half the bytes reach the file, as when a disk fills up in the middle of a write.
            self.file.write_all(&records[..records.len() / 2])?;
            return Err(io::Error::other("injected write failure"));
        }
        self.file.write_all(records)
    }

    fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(faults) = &self.faults {
            faults.before_sync()?;
        }
        self.file.sync_data()
    }
}

fn encode(out: &mut Vec<u8>, record: &RecordOut<'_>) -> io::Result<()> {
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    out.extend_from_slice(&frame(&json));
    Ok(())
}

/// Faults a test can inject into a log's syncs, and what it can observe of them.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Every write fails after writing half its bytes while set.
    pub(crate) fail_write: std::sync::atomic::AtomicBool,
    /// Every sync fails while set.
    pub(crate) fail_sync: std::sync::atomic::AtomicBool,
    /// How many syncs were attempted.
    pub(crate) syncs: std::sync::atomic::AtomicU64,
    /// While true, a sync waits before it starts; the flag says whether one is waiting.
    held: std::sync::Mutex<(bool, bool)>,
    released: std::sync::Condvar,
}

#[cfg(test)]
impl Faults {
    /// Makes the next syncs wait until [`Faults::release`].
    pub(crate) fn hold(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.0 = true;
        }
    }

    /// Lets waiting and later syncs go on.
    pub(crate) fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.0 = false;
        }
        self.released.notify_all();
    }

    /// Whether a sync is waiting to be released.
    pub(crate) fn waiting(&self) -> bool {
        self.held.lock().is_ok_and(|held| held.1)
    }

    fn before_sync(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let mut held = self.held.lock().map_err(|_| io::Error::other("poisoned"))?;
        while held.0 {
            held.1 = true;
            held = self.released.wait(held).map_err(|_| io::Error::other("poisoned"))?;
        }
        held.1 = false;
        drop(held);
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        Ok(())
    }
}

/// One record of a log, as [`LogReader`] reads it: an append (its events, stored with their seqs, and
/// its idempotency record) or an idempotency record written on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// An append to one user's stream.
    Append {
        /// Whose stream.
        owner: UserId,
        /// The events as they were stored (seq, time, ids and metadata), upcast to this build's schemas.
        events: Vec<StoredEvent>,
        /// The idempotency record written with them.
        idempotency: Option<IdempotencyWrite>,
    },
    /// An idempotency record written on its own (a push that was sent).
    Remember(IdempotencyWrite),
}

/// Reads a data directory's log record by record, in the order they were written (which is the commit
/// order), without replaying it into memory: for a one-time import into another store.
///
/// It holds the log's lock while it lives, so no store can write to the log meanwhile, and changes
/// nothing in the file: a torn or corrupt tail ends the reading, and [`LogReader::torn_bytes`] then says
/// how many bytes were left behind (only writes that were never acknowledged can be in them).
#[derive(Debug)]
pub struct LogReader {
    reader: BufReader<File>,
    path: PathBuf,
    file_len: u64,
    /// Where the next record starts: the length of the intact log read so far.
    offset: u64,
    records: u64,
    done: bool,
}

impl LogReader {
    /// Opens the log [`LOG_FILE`] of `dir` for reading.
    ///
    /// # Errors
    /// [`OpenError::Locked`] when a store has the log open; [`OpenError::Io`] when it cannot be opened
    /// (including when there is none).
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let path = dir.join(LOG_FILE);
        let file = File::open(&path).map_err(io_error(&path))?;
        file.try_lock().map_err(|e| OpenError::Locked {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let file_len = file.metadata().map_err(io_error(&path))?.len();
        Ok(Self {
            reader: BufReader::new(file),
            path,
            file_len,
            offset: 0,
            records: 0,
            done: false,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many records were read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// How many bytes follow the last intact record: once the reader is at its end, the size of a torn or
    /// corrupt tail (0 for a clean log).
    pub fn torn_bytes(&self) -> u64 {
        self.file_len.saturating_sub(self.offset)
    }

    fn read(&mut self) -> Result<Option<LogRecord>, OpenError> {
        let Some(json) = next_record(&mut self.reader).map_err(io_error(&self.path))? else {
            return Ok(None);
        };
        let unreadable = |reason: String| OpenError::Unreadable {
            path: self.path.clone(),
            offset: self.offset,
            reason,
        };
        let record = match serde_json::from_slice(&json).map_err(|e| unreadable(e.to_string()))? {
            RecordIn::Append {
                owner,
                events,
                idempotency,
            } => LogRecord::Append {
                owner,
                events: events
                    .into_iter()
                    .map(|raw| decode(raw).map_err(|e| unreadable(e.to_string())))
                    .collect::<Result<_, _>>()?,
                idempotency: idempotency.map(WriteRepr::into_write),
            },
            RecordIn::Remember { write } => LogRecord::Remember(write.into_write()),
        };
        self.offset += (HEADER_LEN + json.len() + 1) as u64;
        self.records += 1;
        Ok(Some(record))
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord, OpenError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// Applies one replayed record, checking that its events continue their stream.
fn replay(state: &mut State, record: RecordIn) -> Result<(), String> {
    match record {
        RecordIn::Append {
            owner,
            events,
            idempotency,
        } => {
            let mut expected = state.last_seq(&owner);
            let mut stored = Vec::with_capacity(events.len());
            for raw in events {
                let event = decode(raw).map_err(|e| e.to_string())?;
                expected = expected.next();
                if event.owner != owner || event.seq != expected {
                    return Err(format!(
                        "event {} of {} at seq {} does not continue the stream of {owner} at seq {expected}",
                        event.event_id, event.owner, event.seq
                    ));
                }
                stored.push(event);
            }
            let idempotency = idempotency.map(WriteRepr::into_write);
            state.apply_append(&owner, &stored, idempotency.as_ref());
        }
        RecordIn::Remember { write } => state.apply_remember(&write.into_write()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_back_and_damage_is_detected() -> io::Result<()> {
        let one = frame(br#"{"a":1}"#);
        let two = frame(br#"{"b":2}"#);
        let mut bytes = [one.clone(), two.clone()].concat();
        let mut reader = bytes.as_slice();
        assert_eq!(next_record(&mut reader)?, Some(br#"{"a":1}"#.to_vec()));
        assert_eq!(next_record(&mut reader)?, Some(br#"{"b":2}"#.to_vec()));
        assert_eq!(next_record(&mut reader)?, None);
        // A flipped bit in the second record's JSON fails its checksum.
        let at = one.len() + HEADER_LEN + 2;
        bytes[at] ^= 0x01;
        let mut reader = bytes.as_slice();
        assert!(next_record(&mut reader)?.is_some());
        assert_eq!(next_record(&mut reader)?, None);
        // A record cut short anywhere is not returned.
        for cut in 0..two.len() {
            let mut reader = &two[..cut];
            assert_eq!(next_record(&mut reader)?, None, "cut at {cut}");
        }
        let mut reader: &[u8] = b"ffffffff 00000000 {}\n";
        assert_eq!(next_record(&mut reader)?, None, "absurd lengths are corruption");
        Ok(())
    }
}
