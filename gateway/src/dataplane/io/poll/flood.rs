//! Control-frame floods (CVE-2019-9512 ping flood, CVE-2019-9515 settings flood,
//! CVE-2019-9518 empty frames): frames that make the server work (a PING or SETTINGS to
//! acknowledge, an empty DATA frame to process) without asking for anything. The `h2`
//! crate answers each, one at a time as the client reads, which bounds memory but not
//! the work a reading client can cause; it does not expose the frames either. So the
//! bytes it is handed are scanned here for frame headers: more than
//! [`MAX_IDLE_CONTROL_FRAMES`] such frames since the client last opened a stream or sent
//! body bytes is a flood, and the connection is closed with `ENHANCE_YOUR_CALM`.

/// Control frames allowed between two frames that do work. A gRPC client pinging every
/// 10 s on an idle connection reaches it after almost 3 hours; the idle timeout ends such
/// a connection long before.
pub(crate) const MAX_IDLE_CONTROL_FRAMES: u32 = 1_000;

/// The client connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE_LEN: usize = 24;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
/// The ACK flag of SETTINGS and PING, and END_STREAM of DATA.
const ACK_OR_END: u8 = 0x1;

/// Follows the frame headers of the client's byte stream.
#[derive(Debug)]
pub(crate) struct FrameScan {
    /// Preface bytes still to pass.
    preface: usize,
    /// The frame header being read.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
    /// Control frames since the last frame that did work.
    idle: u32,
}

impl FrameScan {
    /// A scanner at the start of the connection (the preface comes first).
    pub(crate) fn new() -> Self {
        FrameScan {
            preface: PREFACE_LEN,
            header: [0; 9],
            have: 0,
            skip: 0,
            idle: 0,
        }
    }

    /// Follows `bytes`; true once the client floods.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let n = self.preface.min(bytes.len());
        self.preface -= n;
        bytes = &bytes[n..];
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = &self.header;
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            self.skip = len;
            match kind {
                HEADERS => self.idle = 0,
                DATA if len > 0 => self.idle = 0,
                // Empty DATA not ending the stream, PING and SETTINGS to acknowledge.
                DATA | SETTINGS | PING if flags & ACK_OR_END == 0 => self.idle += 1,
                _ => {}
            }
        }
        self.idle > MAX_IDLE_CONTROL_FRAMES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn preface() -> Vec<u8> {
        let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        b.extend(frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]));
        b
    }

    #[test]
    fn pings_without_requests_are_a_flood_and_requests_reset_the_count() {
        let mut s = FrameScan::new();
        assert!(!s.feed(&preface()));
        let ping = frame(PING, 0, &[7; 8]);
        for _ in 0..MAX_IDLE_CONTROL_FRAMES - 1 {
            assert!(!s.feed(&ping));
        }
        // A request (HEADERS) is work: the count starts again.
        assert!(!s.feed(&frame(HEADERS, 0x5, &[0x82, 0x86, 0x84])));
        for _ in 0..MAX_IDLE_CONTROL_FRAMES {
            assert!(!s.feed(&ping));
        }
        assert!(s.feed(&ping));
    }

    #[test]
    fn acks_body_bytes_and_window_updates_are_not_counted() {
        let mut s = FrameScan::new();
        s.feed(&preface());
        let mut stream = Vec::new();
        for _ in 0..3 * MAX_IDLE_CONTROL_FRAMES {
            stream.extend(frame(PING, ACK_OR_END, &[0; 8]));
            stream.extend(frame(SETTINGS, ACK_OR_END, &[]));
            stream.extend(frame(0x8, 0, &[0, 0, 1, 0]));
            stream.extend(frame(DATA, ACK_OR_END, &[]));
        }
        assert!(!s.feed(&stream));
        // Empty DATA frames that do not end the stream are.
        let empty = frame(DATA, 0, &[]);
        let flood: Vec<u8> = (0..=MAX_IDLE_CONTROL_FRAMES)
            .flat_map(|_| empty.clone())
            .collect();
        assert!(s.feed(&flood));
    }

    #[test]
    fn frames_split_anywhere_are_followed() {
        let mut whole = preface();
        for i in 0..=MAX_IDLE_CONTROL_FRAMES {
            whole.extend(frame(SETTINGS, 0, &[0, 4, 0, 0, 0, (i % 7) as u8]));
            whole.extend(frame(DATA, 0, &[9; 300]));
            whole.extend(frame(SETTINGS, 0, &[]));
        }
        // Each DATA with bytes resets: never a flood, however the bytes are cut.
        for cut in [1, 5, 9, 10, 17, 333] {
            let mut s = FrameScan::new();
            assert!(whole.chunks(cut).all(|c| !s.feed(c)), "cut {cut}");
        }
        let mut pings = preface();
        for _ in 0..=MAX_IDLE_CONTROL_FRAMES {
            pings.extend(frame(PING, 0, &[1; 8]));
        }
        let mut s = FrameScan::new();
        assert!(pings.chunks(7).any(|c| s.feed(c)));
    }
}
