//! Arbitrary bytes into the frame decoder, arriving in arbitrary pieces: it
//! must return frames or an error, never panic, and never reserve more than
//! one frame's room (`-malloc_limit_mb` catches that); the frames it returns
//! must encode back to exactly the bytes they were cut from.

#![no_main]

use bytes::BytesMut;
use fulmar::wire::{Decoder, FrameError};
use libfuzzer_sys::fuzz_target;

/// How many leading bytes of the input give the piece sizes.
const PATTERN_LEN: usize = 4;

fuzz_target!(|data: &[u8]| {
    let (pattern, stream) = data.split_at(data.len().min(PATTERN_LEN));
    let mut sizes = pattern.iter().map(|&size| usize::from(size) + 1).cycle();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut reencoded = Vec::new();
    let mut fed = 0;
    'feed: while fed < stream.len() {
        let size = sizes.next().unwrap_or(stream.len());
        let piece = &stream[fed..stream.len().min(fed + size)];
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame
                    .encode_into(&mut reencoded)
                    .expect("a decoded frame encodes"),
                Ok(None) => break,
                Err(_) => {
                    // Out of step for good: no later bytes revive it.
                    buf.extend_from_slice(&stream[fed..]);
                    assert!(matches!(decoder.decode(&mut buf), Err(FrameError::Unusable)));
                    break 'feed;
                }
            }
        }
    }
    // Nothing lost or invented: frames, then what is still undecoded.
    assert_eq!(reencoded, stream[..reencoded.len()]);
    assert_eq!(buf, stream[reencoded.len()..]);
});
