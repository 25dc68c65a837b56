//! Block devices as clients see them.

use crate::api::label::Label;
use serde::{Deserialize, Serialize};

/// One block device of the store; `block list --json` prints an array of these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockDeviceInfo {
    pub name: Label,
    pub size_mb: u64,
    /// The unikernel holding it, if any.
    pub attached_to: Option<Label>,
}
