//! The transport under the protocol: frames on the daemon socket, the
//! handshake every connection starts with, the credit windows that keep a
//! binary stream inside the receiver's memory, and the client that speaks it
//! all (docs/protocol.md, "Framing").
//!
//! A frame is a 4-byte big-endian length, a kind byte, an 8-byte big-endian
//! id and a payload: one JSON value, or raw bytes of a binary stream. The
//! framing knows nothing of what the JSON means: [`crate::api::protocol`]
//! defines the messages, and only [`client`] (and the daemon) read them.

pub mod client;
mod codec;
mod flow;
mod handshake;
mod reader;
#[cfg(test)]
mod testing;
mod writer;
mod zerocopy;

pub use codec::{Decoder, Frame, FrameError, FrameKind};
pub use flow::{CreditWindow, FlowError, ReceiveWindow};
pub use handshake::{HandshakeError, Hello, Peer, SOFTWARE, handshake};
pub use reader::{FrameReader, Received};
pub use writer::{FrameWriter, Outgoing, write_frames};
pub use zerocopy::{Pieces, Pipe};

use std::time::Duration;

/// The protocol this build speaks; both ends of a connection must agree.
/// 3: console lines carry their bytes as text or base64, not as numbers.
pub const PROTOCOL_VERSION: u32 = 3;
/// Length prefix (4), kind (1) and id (8).
pub const HEADER_LEN: usize = 13;
/// The longest payload of a JSON frame.
pub const MAX_JSON_PAYLOAD: usize = 16 << 20;
/// The longest payload of a data frame.
pub const MAX_DATA_PAYLOAD: usize = 1 << 20;
/// What senders of binary streams put in one data frame: as much as one
/// may carry, so a stream costs as few frames (and system calls) as can be.
pub const CHUNK_SIZE: usize = MAX_DATA_PAYLOAD;
/// How many bytes of a binary stream a receiver lets be in flight.
pub const DEFAULT_WINDOW: u64 = 4 << 20;
/// How long either end waits for the other's Hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
