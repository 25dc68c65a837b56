//! What an image is, as `fulmar inspect` and the create form show it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The Solo5 target an image was built for (ABI note, field `target`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Hvt,
    Spt,
    Virtio,
    Muen,
    Genode,
    Xen,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Hvt,
        Target::Spt,
        Target::Virtio,
        Target::Muen,
        Target::Genode,
        Target::Xen,
    ];

    /// The number the ABI note stores for this target.
    pub fn code(self) -> u32 {
        match self {
            Target::Hvt => 1,
            Target::Spt => 2,
            Target::Virtio => 3,
            Target::Muen => 4,
            Target::Genode => 5,
            Target::Xen => 6,
        }
    }

    pub fn from_code(code: u32) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Hvt => "hvt",
            Target::Spt => "spt",
            Target::Virtio => "virtio",
            Target::Muen => "muen",
            Target::Genode => "genode",
            Target::Xen => "xen",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a manifest device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Block,
    Net,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Block => "block",
            DeviceKind::Net => "net",
        })
    }
}

/// One device the image's manifest declares; the tender must be given exactly these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DeviceKind,
}

/// Everything the two Solo5 notes and the file itself say about an image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub target: Target,
    pub abi_version: u32,
    pub manifest_version: u32,
    /// In manifest order, without the reserved entry 0.
    pub devices: Vec<Device>,
    /// SHA-256 of the uncompressed ELF, lowercase hex.
    pub sha256: String,
    /// Whether the file on disk was zlib-compressed.
    pub compressed: bool,
    /// Size of the uncompressed ELF in bytes.
    pub size: u64,
}

/// Which tender would run an image, or why none would.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum TenderReport {
    Found { path: String, abi_version: u32 },
    Missing { error: String },
}

/// The answer to `fulmar inspect`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InspectReport {
    #[serde(flatten)]
    pub image: ImageInfo,
    pub tender: TenderReport,
}
