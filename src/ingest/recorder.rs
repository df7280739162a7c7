//! Recording a source stream to a Janus `.mjr` file, off the receiver's path.
//!
//! The receiver offers each packet it hands out (already renumbered, so a
//! source restart does not break the file's sequence) to the stream's
//! [`RecordingSlot`]: while a recording runs, a clone of the shared packet
//! goes through a bounded channel to the recording's writer thread (no copy, no
//! allocation; a full channel drops the packet and counts it). The writer owns
//! the file: Janus's MJR00002 layout, which `janus-pp-rec` reads:
//!
//! - `MJR00002`, a 2-byte big-endian length, then that many bytes of JSON:
//!   `{"t": "a"|"v", "c": <codec>, "s": <created, µs>, "u": <first packet, µs>}`
//!   (written when the first packet comes, as Janus does);
//! - per packet `MEET`, the 4-byte milliseconds since the recording started,
//!   the 2-byte length, and the RTP packet.
//!
//! A write that fails (a full disk, a file that can no longer be written) ends
//! the recording: the slot is emptied, and an [`Event::RecordingStopped`] tells
//! the control plane why. So does a file that is no longer in any directory
//! (its directory removed: Linux takes the writes, which would be lost), seen
//! at each flush. Viewers never wait on the disk.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::events::{Event, EventQueue};
use crate::media::packet::Packet;
use crate::media::MediaKind;

/// Packets waiting for the writer; past this the receiver drops them (counted).
const QUEUE_PACKETS: usize = 4096;
/// The writer flushes to the file at least this often (a full disk shows within it).
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// A source stream's recording, if one runs: shared by the receiver (which
/// offers packets) and the engine (which starts and stops it).
#[derive(Default)]
pub struct RecordingSlot {
    active: AtomicBool,
    sender: Mutex<Option<SyncSender<Arc<Packet>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Packets written, and dropped because the writer fell behind (this recording).
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// What the writer needs to know besides the packets.
pub struct RecordingTarget {
    pub mountpoint_id: u64,
    pub index: u32,
    pub kind: MediaKind,
    /// Janus's codec name: "opus", "vp8", "h264"...
    pub codec: String,
}

impl RecordingSlot {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts recording to `path` (created or truncated now: an error here,
    /// such as a missing directory, is returned); a running recording ends first.
    pub fn start(self: &Arc<Self>, path: &str, target: RecordingTarget, events: Arc<EventQueue>) -> io::Result<()> {
        self.stop();
        let file = File::create(path)?;
        let (sender, packets) = sync_channel(QUEUE_PACKETS);
        self.written.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
        let slot = Arc::clone(self);
        let writer = std::thread::Builder::new()
            .name("fanout-recorder".into())
            .spawn(move || slot.write(file, packets, target, events))?;
        *lock(&self.sender) = Some(sender);
        *lock(&self.writer) = Some(writer);
        self.active.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the recording, its file flushed and closed when this returns. Nothing running: nothing done.
    pub fn stop(&self) {
        self.active.store(false, Ordering::Relaxed);
        lock(&self.sender).take();
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// The receiver's offer of one packet it hands out.
    pub fn offer(&self, packet: &Arc<Packet>) {
        if !self.is_active() {
            return;
        }
        let sender = lock(&self.sender);
        if let Some(sender) = sender.as_ref() {
            match sender.try_send(Arc::clone(packet)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => self.active.store(false, Ordering::Relaxed),
            }
        }
    }

    fn write(&self, file: File, packets: Receiver<Arc<Packet>>, target: RecordingTarget, events: Arc<EventQueue>) {
        let watched = file.try_clone();
        let mut writer = MjrWriter::new(BufWriter::with_capacity(64 * 1024, file), &target);
        let result = (|| -> io::Result<()> {
            let watched = watched?;
            let mut flushed = Instant::now();
            loop {
                match packets.recv_timeout(FLUSH_INTERVAL) {
                    Ok(packet) => {
                        writer.packet(packet.bytes())?;
                        self.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return writer.flush(),
                }
                if flushed.elapsed() >= FLUSH_INTERVAL {
                    writer.flush()?;
                    if watched.metadata()?.nlink() == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            "the file was removed (its directory vanished)",
                        ));
                    }
                    flushed = Instant::now();
                }
            }
        })();
        if let Err(error) = result {
            self.active.store(false, Ordering::Relaxed);
            lock(&self.sender).take();
            events.push(Event::RecordingStopped {
                mountpoint_id: target.mountpoint_id,
                index: target.index,
                reason: error.to_string(),
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn micros_since_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64)
}

/// The MJR00002 layout over any writer (sans-IO apart from the clock it reads).
pub struct MjrWriter<W: Write> {
    out: W,
    kind: &'static str,
    codec: String,
    created_us: u64,
    started: Option<Instant>,
}

impl<W: Write> MjrWriter<W> {
    pub fn new(out: W, target: &RecordingTarget) -> Self {
        let kind = if target.kind == MediaKind::Video { "v" } else { "a" };
        Self { out, kind, codec: target.codec.clone(), created_us: micros_since_epoch(), started: None }
    }

    /// Writes one RTP packet (the header first, with the first packet).
    pub fn packet(&mut self, rtp: &[u8]) -> io::Result<()> {
        let started = match self.started {
            Some(started) => started,
            None => {
                let info = format!(
                    "{{\"t\":\"{}\",\"c\":\"{}\",\"s\":{},\"u\":{}}}",
                    self.kind,
                    self.codec,
                    self.created_us,
                    micros_since_epoch()
                );
                self.out.write_all(b"MJR00002")?;
                self.out.write_all(&(info.len() as u16).to_be_bytes())?;
                self.out.write_all(info.as_bytes())?;
                *self.started.insert(Instant::now())
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u32;
        self.out.write_all(b"MEET")?;
        self.out.write_all(&elapsed_ms.to_be_bytes())?;
        self.out.write_all(&(rtp.len() as u16).to_be_bytes())?;
        self.out.write_all(rtp)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: MediaKind, codec: &str) -> RecordingTarget {
        RecordingTarget { mountpoint_id: 1, index: 0, kind, codec: codec.into() }
    }

    #[test]
    fn writes_janus_header_then_meet_frames() {
        let mut writer = MjrWriter::new(Vec::new(), &target(MediaKind::Video, "vp8"));
        writer.packet(&[0x80, 96, 0, 1]).unwrap();
        writer.packet(&[0x80, 96, 0, 2, 9]).unwrap();
        let bytes = writer.into_inner();
        assert_eq!(&bytes[..8], b"MJR00002");
        let info_len = u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
        let info = std::str::from_utf8(&bytes[10..10 + info_len]).unwrap();
        assert!(info.starts_with("{\"t\":\"v\",\"c\":\"vp8\",\"s\":"), "{info}");
        let frames = &bytes[10 + info_len..];
        assert_eq!(&frames[..4], b"MEET");
        assert_eq!(u16::from_be_bytes([frames[8], frames[9]]), 4);
        assert_eq!(&frames[10..14], &[0x80, 96, 0, 1]);
        assert_eq!(&frames[14..18], b"MEET");
        assert_eq!(u16::from_be_bytes([frames[22], frames[23]]), 5);
        assert_eq!(frames.len(), 14 + 15);
    }

    #[test]
    fn audio_is_type_a() {
        let mut writer = MjrWriter::new(Vec::new(), &target(MediaKind::Audio, "opus"));
        writer.packet(&[0x80, 111, 0, 1]).unwrap();
        let bytes = writer.into_inner();
        assert!(bytes[10..].starts_with(b"{\"t\":\"a\",\"c\":\"opus\","));
    }

    #[test]
    fn a_vanished_directory_stops_the_recording_with_an_event() {
        let events = Arc::new(EventQueue::new().unwrap());
        let slot = Arc::new(RecordingSlot::default());
        let directory = std::env::temp_dir().join(format!("fanout-recorder-test-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("video.mjr");
        slot.start(path.to_str().unwrap(), target(MediaKind::Video, "vp8"), events.clone()).unwrap();
        std::fs::remove_dir_all(&directory).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.is_active() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!slot.is_active());
        slot.stop();
        let drained = events.drain();
        assert!(
            matches!(&drained[..], [Event::RecordingStopped { reason, .. }] if reason.contains("directory vanished")),
            "{drained:?}"
        );
    }

    #[test]
    fn a_full_disk_stops_the_recording_with_an_event() {
        let events = Arc::new(EventQueue::new().unwrap());
        let slot = Arc::new(RecordingSlot::default());
        slot.start("/dev/full", target(MediaKind::Audio, "opus"), events.clone()).unwrap();
        let mut packet = Arc::new(Packet::empty());
        let meta = packet.meta;
        Arc::get_mut(&mut packet).unwrap().fill(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], meta);
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.is_active() && Instant::now() < deadline {
            for _ in 0..8192 {
                slot.offer(&packet);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!slot.is_active());
        slot.stop();
        let drained = events.drain();
        assert!(
            matches!(&drained[..], [Event::RecordingStopped { mountpoint_id: 1, index: 0, reason }] if reason.contains("No space")),
            "{drained:?}"
        );
    }
}
