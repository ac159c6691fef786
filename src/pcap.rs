//! Packet capture in the classic pcap format (what tcpdump, tshark and Wireshark read):
//! Ethernet link type, microsecond timestamps, whole frames.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::SystemTime;

/// Largest frame recorded whole (larger ones are cut, with their real length kept).
pub const SNAPLEN: u32 = 262_144;

/// An open capture file.
pub struct PcapWriter {
    out: BufWriter<File>,
    /// Frames written.
    pub frames: u64,
    limit: Option<u64>,
    /// Only the frames one interface would see: from or to this MAC, plus group frames.
    only: Option<[u8; 6]>,
}

impl PcapWriter {
    /// Creates (or truncates) `path` and writes the file header. `limit`: stop after that many
    /// frames.
    ///
    /// # Errors
    /// When the file cannot be created or written.
    pub fn create(path: &Path, limit: Option<u64>) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic: microsecond timestamps
        h.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // GMT offset
        h.extend_from_slice(&0u32.to_le_bytes()); // accuracy
        h.extend_from_slice(&SNAPLEN.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&h)?;
        out.flush()?;
        Ok(Self { out, frames: 0, limit, only: None })
    }

    /// Keeps only what the interface with this MAC sees: frames from or to it, and broadcast
    /// and multicast frames (as tcpdump on that interface would show).
    #[must_use]
    pub fn only_mac(mut self, mac: [u8; 6]) -> Self {
        self.only = Some(mac);
        self
    }

    /// Whether the frame limit is reached.
    pub fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.frames >= l)
    }

    /// Appends one frame stamped now. Returns false once the limit is reached or on a write
    /// error (the capture should then be closed).
    pub fn write(&mut self, frame: &[u8]) -> bool {
        if self.full() {
            return false;
        }
        if let Some(mac) = self.only {
            let (dst, src) = (frame.get(..6), frame.get(6..12));
            let group = dst.is_some_and(|d| d[0] & 1 == 1);
            if dst != Some(&mac[..]) && src != Some(&mac[..]) && !group {
                return false;
            }
        }
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let cut = frame.len().min(SNAPLEN as usize);
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        rec[8..12].copy_from_slice(&(cut as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        let ok = self.out.write_all(&rec).and_then(|()| self.out.write_all(&frame[..cut])).is_ok();
        if ok {
            self.frames += 1;
        }
        ok && !self.full()
    }

    /// Takes no frame from now on (others holding the capture may still try to write).
    pub fn close(&mut self) {
        self.limit = Some(self.frames);
    }

    /// Flushes what is buffered.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records() {
        let path = std::env::temp_dir().join(format!("warren-pcap-{}.pcap", std::process::id()));
        {
            let mut w = PcapWriter::create(&path, Some(2)).unwrap();
            assert!(w.write(&[1u8; 60]));
            assert!(!w.write(&[2u8; 42]), "the second frame reaches the limit");
            assert!(!w.write(&[3u8; 10]), "nothing after the limit");
            assert_eq!(w.frames, 2);
        }
        let b = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1, "Ethernet");
        assert_eq!(b.len(), 24 + 16 + 60 + 16 + 42);
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 60);
        assert_eq!(&b[40..100], &[1u8; 60][..]);
    }
}
