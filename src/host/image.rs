//! Solo5 images: the ELF file, its two notes, compression and digest.
//! (Placeholder API; the implementation lands with issue 2.)

use crate::api::image::{Device, ImageInfo, Target};
use std::path::{Path, PathBuf};

/// How to treat the bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zlib if the file starts with a zlib header, plain ELF otherwise.
    #[default]
    Detect,
    /// The operator said `--compressed`: the file must be zlib.
    Zlib,
}

/// A loaded image: what it is, and the uncompressed ELF to hand to a tender.
#[derive(Debug, Clone)]
pub struct Image {
    pub info: ImageInfo,
    pub elf: Vec<u8>,
}

/// What the two Solo5 notes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notes {
    pub target: Target,
    pub abi_version: u32,
    pub manifest_version: u32,
    pub devices: Vec<Device>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn load(path: &Path, compression: Compression) -> Result<Image, ImageError> {
    let raw = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    from_bytes(raw, compression)
}

pub fn from_bytes(_raw: Vec<u8>, _compression: Compression) -> Result<Image, ImageError> {
    unimplemented!("issue 2")
}

pub fn parse_notes(_elf: &[u8]) -> Result<Notes, ImageError> {
    unimplemented!("issue 2")
}
