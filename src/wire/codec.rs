//! A frame's wire form: what a frame is, how it is written, and how frames
//! are cut out of bytes that arrive in pieces of any size.

use super::{HEADER_LEN, MAX_DATA_PAYLOAD, MAX_JSON_PAYLOAD};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::time::Duration;

/// The bytes the length prefix counts besides the payload: kind and id.
const KIND_AND_ID: usize = 9;
const LEN_PREFIX: usize = 4;

/// What a frame's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// One UTF-8 JSON value, a message of `api::protocol`.
    Json = 1,
    /// Raw bytes of the binary stream `id`.
    Data = 2,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Json),
            2 => Some(Self::Data),
            _ => None,
        }
    }

    /// The longest payload a frame of this kind may carry.
    pub fn max_payload(self) -> usize {
        match self {
            Self::Json => MAX_JSON_PAYLOAD,
            Self::Data => MAX_DATA_PAYLOAD,
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "JSON",
            Self::Data => "data",
        })
    }
}

/// Why frames could not be read or written. After any error but `Io` or a
/// JSON error from [`Frame::json`], the connection is out of step with its
/// peer and must be closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "a {}frame with a {len}-byte payload is over the protocol's limit of {max} bytes \
         (a peer that sends one is not speaking fulmar's protocol)",
        .kind.map_or(String::new(), |kind| format!("{kind} "))
    )]
    TooLong {
        /// None when the length alone is over every kind's limit.
        kind: Option<FrameKind>,
        len: u64,
        max: usize,
    },
    #[error(
        "a frame of {len} bytes is too short for its kind and id \
         (the peer is not speaking fulmar's protocol)"
    )]
    TooShort { len: u32 },
    #[error(
        "a frame of unknown kind {0:#04x} (the peer is not speaking fulmar's protocol, \
         or a newer version of it)"
    )]
    UnknownKind(u8),
    #[error(
        "the connection closed mid-frame, {received} bytes into it: the other end stopped or crashed"
    )]
    ClosedMidFrame { received: usize },
    #[error(
        "a frame stopped {received} bytes into it: nothing more came for {after:?}, so the \
         connection was closed (the other end is stuck, or not speaking fulmar's protocol)"
    )]
    Stalled { received: usize, after: Duration },
    #[error("this connection already failed to read a frame and cannot be used: reconnect")]
    Unusable,
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("frame {id} carries {kind} where a JSON message was expected: the peer is broken")]
    NotJson { id: u64, kind: FrameKind },
    #[error("the JSON message in frame {id} is not what was expected: {source}")]
    BadJson {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not encode a message as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(
        "the peer sent more than {max} files that no request used (it is not speaking fulmar's protocol)"
    )]
    TooManyFiles { max: usize },
    #[error("only a Unix socket on Linux can carry a file to the daemon: send the data as frames")]
    CannotLend,
}

/// Refuses payloads longer than `kind` allows (any kind's limit when the
/// kind is not known yet).
fn check_len(kind: Option<FrameKind>, len: u64) -> Result<(), FrameError> {
    // MAX_JSON_PAYLOAD is the larger of the two limits.
    let max = kind.map_or(MAX_JSON_PAYLOAD, FrameKind::max_payload);
    if len > max as u64 {
        return Err(FrameError::TooLong { kind, len, max });
    }
    Ok(())
}

pub(super) fn header(
    kind: FrameKind,
    id: u64,
    payload_len: usize,
) -> Result<[u8; HEADER_LEN], FrameError> {
    check_len(Some(kind), payload_len as u64)?;
    let mut header = [0; HEADER_LEN];
    let mut out = &mut header[..];
    // Cannot truncate: the payload is at most MAX_JSON_PAYLOAD.
    out.put_u32((payload_len + KIND_AND_ID) as u32);
    out.put_u8(kind as u8);
    out.put_u64(id);
    Ok(header)
}

/// One frame: what it carries, the request or stream it belongs to, and
/// its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u64,
    pub payload: Bytes,
}

impl Frame {
    /// Appends the frame's wire form to `out`; refuses a payload over the
    /// kind's limit, which the peer would refuse too.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.extend_from_slice(&header(self.kind, self.id, self.payload.len())?);
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Decodes the payload of a JSON frame as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        if self.kind != FrameKind::Json {
            return Err(FrameError::NotJson {
                id: self.id,
                kind: self.kind,
            });
        }
        serde_json::from_slice(&self.payload).map_err(|source| FrameError::BadJson {
            id: self.id,
            source,
        })
    }
}

/// Cuts frames out of a buffer that bytes arrive in, in pieces of any size.
///
/// A frame's header is checked as soon as its bytes are there, so a length
/// over the limit or an unknown kind fails at once, before any payload is
/// waited for or buffered. After an error every call fails: the stream is
/// out of step and no attempt is made to find the next frame.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The total size of the frame begun at the front of the buffer, once
    /// its header is known and its payload is not all there.
    pub(super) pending: Option<usize>,
    pub(super) failed: bool,
}

/// A frame's header, once all of it has arrived.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Debug)]
pub(super) struct Head {
    pub(super) kind: FrameKind,
    pub(super) id: u64,
    pub(super) len: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next whole frame at the front of `buf`, removed from it, or None
    /// until more bytes arrive. For a frame begun but not complete, reserves
    /// room in `buf` for the rest (never more than the longest frame).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::Unusable);
        }
        let decoded = self.cut(buf);
        self.failed = decoded.is_err();
        decoded
    }

    /// The header at the front of `buf`, checked, once all of it is there;
    /// `buf` is left as it is.
    #[cfg(target_os = "linux")]
    pub(super) fn head(&mut self, buf: &[u8]) -> Result<Option<Head>, FrameError> {
        if self.failed {
            return Err(FrameError::Unusable);
        }
        let head = read_head(buf);
        self.failed = head.is_err();
        Ok(head?.and_then(|(kind, len)| {
            let id = buf.get(LEN_PREFIX + 1..HEADER_LEN)?.try_into().ok()?;
            Some(Head {
                kind,
                id: u64::from_be_bytes(id),
                len,
            })
        }))
    }

    fn cut(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.pending = None;
        let Some((kind, payload_len)) = read_head(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + payload_len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            self.pending = Some(total);
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(LEN_PREFIX + 1);
        let id = frame.get_u64();
        Ok(Some(Frame {
            kind,
            id,
            payload: frame.freeze(),
        }))
    }
}

/// The kind and payload length at the front of `buf`, checked as soon as
/// their bytes are there: the length on its four bytes alone.
fn read_head(buf: &[u8]) -> Result<Option<(FrameKind, usize)>, FrameError> {
    let Some(mut prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = prefix.get_u32();
    let payload_len = (len as usize)
        .checked_sub(KIND_AND_ID)
        .ok_or(FrameError::TooShort { len })?;
    check_len(None, payload_len as u64)?;
    let Some(&kind_byte) = buf.get(LEN_PREFIX) else {
        return Ok(None);
    };
    let kind = FrameKind::from_byte(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
    check_len(Some(kind), payload_len as u64)?;
    Ok(Some((kind, payload_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Hello;
    use crate::wire::testing::{encode, frame, samples};

    /// Feeds `parts` one after the other, decoding all it can after each.
    fn decode_parts(parts: &[&[u8]]) -> (Vec<Frame>, BytesMut) {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for part in parts {
            buf.extend_from_slice(part);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        (frames, buf)
    }

    /// A header as a peer might send it, unchecked.
    fn raw_header(len: u32, kind: u8, id: u64) -> Vec<u8> {
        let mut header = len.to_be_bytes().to_vec();
        header.push(kind);
        header.extend_from_slice(&id.to_be_bytes());
        header
    }

    #[test]
    fn the_wire_form_is_length_kind_id_payload() {
        let wire = encode(&[frame(FrameKind::Data, 0x0102_0304_0506_0708, b"xy")]);
        assert_eq!(
            wire,
            [0, 0, 0, 11, 2, 1, 2, 3, 4, 5, 6, 7, 8, b'x', b'y'],
            "docs/protocol.md describes this layout"
        );
        let wire = encode(&[frame(FrameKind::Json, 1, b"{}")]);
        assert_eq!(wire, [0, 0, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0, 1, b'{', b'}']);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode_the_same() {
        let frames = samples();
        let wire = encode(&frames);
        for split in 0..=wire.len() {
            let (decoded, rest) = decode_parts(&[&wire[..split], &wire[split..]]);
            assert_eq!(decoded, frames, "split at byte {split}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_decode_the_same() {
        let frames = samples();
        let wire = encode(&frames);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let (decoded, rest) = decode_parts(&bytes);
        assert_eq!(decoded, frames);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_partial_frame_stays_in_the_buffer() {
        let wire = encode(&samples());
        let (decoded, rest) = decode_parts(&[&wire[..wire.len() - 1]]);
        assert_eq!(decoded, samples()[..samples().len() - 1]);
        assert_eq!(rest.len(), HEADER_LEN + "\"\u{e9}t\u{e9}\"".len() - 1);
    }

    #[test]
    fn the_longest_frames_pass_and_one_byte_more_is_refused() {
        for kind in [FrameKind::Json, FrameKind::Data] {
            let max = kind.max_payload();
            let longest = Frame {
                kind,
                id: 9,
                payload: Bytes::from(vec![b' '; max]),
            };
            let (decoded, _) = decode_parts(&[&encode(std::slice::from_ref(&longest))]);
            assert_eq!(decoded, [longest]);

            let over = Frame {
                kind,
                id: 9,
                payload: Bytes::from(vec![b' '; max + 1]),
            };
            let mut out = Vec::new();
            let refused = over.encode_into(&mut out);
            assert!(
                matches!(refused, Err(FrameError::TooLong { kind: Some(k), len, max: m })
                    if k == kind && len == max as u64 + 1 && m == max),
                "{refused:?}"
            );
            assert!(out.is_empty(), "nothing of a refused frame is written");

            // The decoder refuses the header alone, without waiting for the payload.
            // (Over the JSON limit is over every limit, known from the length alone.)
            let mut buf = BytesMut::from(&raw_header((max + 1 + 9) as u32, kind as u8, 9)[..]);
            let refused = Decoder::new().decode(&mut buf);
            assert!(
                matches!(refused, Err(FrameError::TooLong { len, .. }) if len == max as u64 + 1),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_length_over_every_limit_fails_on_its_four_bytes() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&b"GET "[..]);
        let refused = decoder.decode(&mut buf);
        assert!(
            matches!(refused, Err(FrameError::TooLong { kind: None, len, .. }) if len == 0x4745_5420 - 9),
            "{refused:?}"
        );
        assert_eq!(buf.capacity(), 4, "nothing is reserved for a refused frame");
        // The connection is dead: no attempt to find a next frame.
        buf.extend_from_slice(&encode(&samples()));
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::Unusable)
        ));
    }

    #[test]
    fn a_length_shorter_than_kind_and_id_is_refused() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0][..]);
        let refused = Decoder::new().decode(&mut buf);
        assert!(
            matches!(refused, Err(FrameError::TooShort { len: 8 })),
            "{refused:?}"
        );
    }

    #[test]
    fn an_unknown_kind_is_refused_on_its_byte() {
        for kind in [0, 3, 0x7f, 0xff] {
            let mut decoder = Decoder::new();
            let mut buf = BytesMut::from(&[0, 0, 0, 9, kind][..]);
            let refused = decoder.decode(&mut buf);
            assert!(
                matches!(refused, Err(FrameError::UnknownKind(k)) if k == kind),
                "{refused:?}"
            );
            assert!(refused.unwrap_err().to_string().contains("unknown kind"));
            assert!(matches!(
                decoder.decode(&mut buf),
                Err(FrameError::Unusable)
            ));
        }
    }

    #[test]
    fn json_frames_decode_into_their_type() {
        let hello = Hello {
            protocol: 4,
            software: "fulmar 9".into(),
        };
        let frame = frame(FrameKind::Json, 5, &serde_json::to_vec(&hello).unwrap()[..]);
        assert_eq!(frame.json::<Hello>().unwrap(), hello);

        let data = Frame {
            kind: FrameKind::Data,
            ..frame.clone()
        };
        assert!(matches!(
            data.json::<Hello>(),
            Err(FrameError::NotJson {
                id: 5,
                kind: FrameKind::Data
            })
        ));
        let wrong = Frame {
            payload: Bytes::from_static(b"[1, 2]"),
            ..frame
        };
        assert!(matches!(
            wrong.json::<Hello>(),
            Err(FrameError::BadJson { id: 5, .. })
        ));
    }
}
