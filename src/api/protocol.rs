//! What clients and the daemon say to each other, inside the frames of
//! [`crate::wire`]. Every JSON frame a client sends is a [`ClientMessage`],
//! every one the daemon sends a [`DaemonMessage`]; both carry the id of the
//! request they belong to in the frame header.
//!
//! Messages are tagged with their content beside the tag (`{"type": …, "body":
//! …}`): serde reads such a body straight into its type, where a tag inside
//! the body would make it buffer the body and lose what JSON cannot say alone
//! (maps keyed by numbers, as in the policy's CPU usage).
//!
//! A request gets exactly one final answer: a [`Reply`], or an [`ApiError`].
//! Streaming requests (console, events) first get any number of
//! [`StreamItem`]s, until the client cancels or the stream ends with
//! [`DaemonMessage::End`]. Binary payloads (an image for `create`) travel as data
//! frames on the request's id, paced by [`ClientMessage::Credit`]/
//! [`DaemonMessage::Credit`], and end with [`ClientMessage::End`].

use crate::api::block::BlockDeviceInfo;
use crate::api::console::{ConsoleEvent, Since};
use crate::api::event::Event;
use crate::api::image::{ImageInfo, TenderReport};
use crate::api::label::Label;
use crate::api::policy::PolicyReport;
use crate::api::stats::Stats;
use crate::api::unikernel::{UnikernelConfig, UnikernelInfo};
use crate::api::validate::Problem;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Every unikernel the daemon knows, in any state.
    List,
    Info {
        name: Label,
    },
    /// Stores an image sent as data frames on this request's id; answers
    /// [`Reply::Image`] with the tender that would run it. zlib is detected;
    /// `compressed` insists on it.
    PutImage {
        compressed: bool,
    },
    /// Validates and starts a unikernel from an image stored by `PutImage`.
    Create {
        config: UnikernelConfig,
        image: String,
    },
    /// Gives the unikernel `config.name` these settings and starts it again
    /// with the image it already has. Every launch rule is checked first (its
    /// own resources counting as free), so a refused change leaves it running
    /// as it was. Answers [`Reply::Unikernel`].
    Reconfigure {
        config: UnikernelConfig,
    },
    Destroy {
        name: Label,
    },
    Restart {
        name: Label,
    },
    Remove {
        name: Label,
    },
    /// History as `since` says, then live lines while `follow`.
    Console {
        name: Label,
        since: Since,
        follow: bool,
    },
    /// Every [`Event`] from now on.
    Events,
    Policy,
    /// One unikernel, or every running one.
    Stats {
        name: Option<Label>,
    },
    /// Every block device in the store, and files there that are not ones.
    BlockList,
    /// A new block device, empty or, with `with_data`, filled from data frames
    /// that follow (as for an upload).
    BlockCreate {
        name: Label,
        size_mb: u64,
        with_data: bool,
        /// The request's frame carries one of the client's open files holding
        /// the data (with `with_data`; see `lend` of [`Request::BlockUpload`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lend: bool,
        /// What the data must be (with `with_data`).
        #[serde(default, skip_serializing_if = "DataCheck::is_empty")]
        check: DataCheck,
    },
    /// Replaces a block device's contents from data frames that follow; the
    /// old contents stay unless the whole upload succeeds.
    BlockUpload {
        name: Label,
        compressed: bool,
        /// The request's frame carries one of the client's open files holding
        /// the data (a regular file, open for reading, read from offset 0),
        /// passed with `SCM_RIGHTS` so the daemon holds exactly the access the
        /// client opened it with, and copies from it in the kernel. It answers
        /// [`StreamItem::Progress`] first if it could use the file; an error
        /// says why it could not. Only a client on the daemon's own Unix
        /// socket lends files.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lend: bool,
        /// What the data must be.
        #[serde(default, skip_serializing_if = "DataCheck::is_empty")]
        check: DataCheck,
    },
    /// The device's contents as data frames, paced by the client's credit,
    /// then `end`.
    BlockDownload {
        name: Label,
        compressed: bool,
        /// The request's frame carries one of the client's open files to write
        /// the contents into (a regular file, open for writing, from offset
        /// 0), passed with `SCM_RIGHTS`; the daemon fills it in the kernel,
        /// sending [`StreamItem::Progress`] and then `end` instead of data
        /// frames. Only a client on the daemon's own Unix socket lends files.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lend: bool,
    },
    /// Makes a block device larger (never smaller).
    BlockGrow {
        name: Label,
        size_mb: u64,
    },
    BlockDestroy {
        name: Label,
    },
}

/// What a block upload's data must be, as the client knows it: the daemon
/// checks the bytes as it stored them (decompressed, for a zlib upload) and
/// refuses the upload, changing nothing, unless they match. A stream longer
/// than `size` is refused as soon as it passes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DataCheck {
    /// The data's length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The data's SHA-256, as 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl DataCheck {
    pub fn is_empty(&self) -> bool {
        self.size.is_none() && self.sha256.is_none()
    }
}

impl Request {
    /// The flag of a plain (not zlib) block transfer that says its frame
    /// carries a file the client lends (docs/protocol.md, "Lent files");
    /// `None` for requests that take none.
    pub fn lends(&mut self) -> Option<&mut bool> {
        match self {
            Request::BlockUpload {
                compressed: false,
                lend,
                ..
            }
            | Request::BlockDownload {
                compressed: false,
                lend,
                ..
            }
            | Request::BlockCreate {
                with_data: true,
                lend,
                ..
            } => Some(lend),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", content = "body", rename_all = "kebab-case")]
pub enum ClientMessage {
    Request(Request),
    /// The client may be sent this many more bytes on the stream.
    Credit {
        bytes: u64,
    },
    /// The client's data stream on this id is complete.
    End,
    /// Stop the stream or request with this id.
    Cancel,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", content = "body", rename_all = "kebab-case")]
pub enum DaemonMessage {
    Reply(Reply),
    Error(ApiError),
    Item(StreamItem),
    /// The daemon may be sent this many more bytes on the stream.
    Credit {
        bytes: u64,
    },
    /// The stream is over (the unikernel was removed, or history without follow).
    End,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "reply", content = "body", rename_all = "kebab-case")]
pub enum Reply {
    Done,
    Unikernels {
        unikernels: Vec<UnikernelInfo>,
    },
    Unikernel {
        unikernel: Box<UnikernelInfo>,
    },
    /// A unikernel forgotten; its image deleted from the store unless other
    /// unikernels (`kept_for`) still use it.
    Removed {
        name: Label,
        kept_for: Vec<Label>,
        /// What the image store gave back (unused images sent more than 15
        /// minutes ago, this one's among them).
        freed_bytes: u64,
    },
    Image {
        image: ImageInfo,
        /// The tender that would run it here, or why none would.
        tender: TenderReport,
    },
    Policy {
        policy: PolicyReport,
    },
    Stats {
        stats: Vec<NamedStats>,
    },
    Blocks {
        blocks: Vec<BlockDeviceInfo>,
        /// Files in the block directory that are not block devices.
        invalid: Vec<InvalidBlock>,
    },
    Block {
        block: BlockDeviceInfo,
    },
    /// How many bytes a transfer moved.
    Transferred {
        bytes: u64,
    },
}

/// A file in the block directory that fulmar leaves alone, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InvalidBlock {
    pub file: String,
    pub why: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamedStats {
    pub name: Label,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "item", content = "body", rename_all = "kebab-case")]
pub enum StreamItem {
    Console {
        event: ConsoleEvent,
    },
    Event {
        event: Event,
    },
    /// A block transfer the daemon copies itself (see `lend`): `done`
    /// of `total` bytes so far, every 50 ms or so and at the end.
    Progress {
        done: u64,
        total: u64,
    },
}

/// The kind of failure, for scripts and for choosing what to show.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No such unikernel, image or block device.
    NotFound,
    /// The request would break a launch rule; `problems` says which.
    Invalid,
    /// The thing is in the wrong state for this (running, attached, busy).
    Conflict,
    /// The host refused (I/O, a command that failed).
    Host,
    /// The client broke the protocol.
    Protocol,
    /// The client's user may not use this daemon.
    Denied,
}

/// A typed error with the human message the operator sees.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// With [`ErrorKind::Invalid`]: every problem, each tied to a form field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            problems: Vec::new(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m = ClientMessage::Request(Request::Destroy {
            name: Label::new("web").unwrap(),
        });
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"request","body":{"request":"destroy","name":"web"}}"#
        );
        let e = DaemonMessage::Error(ApiError::new(ErrorKind::NotFound, "no unikernel named web"));
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","body":{"kind":"not-found","message":"no unikernel named web"}}"#
        );
    }

    #[test]
    fn maps_keyed_by_numbers_survive_the_round_trip() {
        use crate::api::policy::{Policy, PolicyReport, Usage};
        let mut used = Usage::default();
        used.cpus.insert(1, 2);
        let reply = DaemonMessage::Reply(Reply::Policy {
            policy: PolicyReport {
                policy: Policy {
                    cpus: vec![0, 1],
                    memory_mb: 1024,
                    disk_mb: 10,
                    bridges: vec![],
                },
                used,
            },
        });
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(serde_json::from_str::<DaemonMessage>(&json).unwrap(), reply);
    }

    #[test]
    fn block_transfers_lend_no_file_unless_they_say_so() {
        let plain = r#"{"request":"block-upload","name":"disk","compressed":false}"#;
        let request: Request = serde_json::from_str(plain).unwrap();
        let Request::BlockUpload { lend, .. } = &request else {
            panic!("{request:?}");
        };
        assert!(!lend);
        assert_eq!(serde_json::to_string(&request).unwrap(), plain);
        let lent = Request::BlockDownload {
            name: Label::new("disk").unwrap(),
            compressed: false,
            lend: true,
        };
        let json = serde_json::to_string(&lent).unwrap();
        assert!(json.contains(r#""lend":true"#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), lent);
        // The first protocol named a descriptor number for the daemon to
        // take; that field means nothing now.
        let old = r#"{"request":"block-upload","name":"disk","compressed":false,"local_fd":3}"#;
        let Request::BlockUpload { lend, .. } = serde_json::from_str(old).unwrap() else {
            panic!("not an upload");
        };
        assert!(!lend);
    }

    #[test]
    fn invalid_requests_carry_their_problems() {
        let mut e = ApiError::new(ErrorKind::Invalid, "cannot create web");
        e.problems = vec![
            Problem::NameTaken(Label::new("web").unwrap()),
            Problem::NoMemory,
            Problem::Cpu {
                cpu: 7,
                online: vec![0, 1],
            },
        ];
        let json = serde_json::to_string(&DaemonMessage::Error(e.clone())).unwrap();
        let back: DaemonMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, DaemonMessage::Error(e));
    }
}
