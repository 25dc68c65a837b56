//! What the transport's tests share: sample frames, files to send, and two
//! framed ends of one connection.

use super::{Frame, FrameKind, FrameReader, FrameWriter};
use bytes::Bytes;
use std::fs::File;
use tokio::io::duplex;

pub(super) fn frame(kind: FrameKind, id: u64, payload: &[u8]) -> Frame {
    Frame {
        kind,
        id,
        payload: Bytes::copy_from_slice(payload),
    }
}

pub(super) fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for frame in frames {
        frame.encode_into(&mut wire).unwrap();
    }
    wire
}

/// Every kind, an empty payload of each, and ids at both ends of the range.
pub(super) fn samples() -> Vec<Frame> {
    let bytes: Vec<u8> = (0..=255).collect();
    vec![
        frame(FrameKind::Json, 0, br#"{"protocol":1,"software":"x"}"#),
        frame(FrameKind::Data, u64::MAX, &bytes),
        frame(FrameKind::Data, 7, b""),
        frame(FrameKind::Json, 1 << 40, b""),
        frame(FrameKind::Json, 3, "\"\u{e9}t\u{e9}\"".as_bytes()),
    ]
}

/// Bytes that differ from their neighbours, so a misplaced piece shows.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

/// A file holding `bytes`.
pub(super) fn file_with(bytes: &[u8]) -> File {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    file
}

pub(super) type Ends = (
    FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
);

pub(super) fn connected() -> (Ends, Ends) {
    let (a, b) = duplex(64 << 10);
    let ends = |stream| {
        let (read, write) = tokio::io::split(stream);
        (FrameReader::new(read), FrameWriter::new(write))
    };
    (ends(a), ends(b))
}
