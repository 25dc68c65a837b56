//! `fulmar inspect IMAGE`: what a tender would make of an image, without a daemon.

use fulmar::api::image::{ImageInfo, InspectReport, TenderReport};
use fulmar::host::image::{self, Compression, ImageError};
use fulmar::host::paths::{Dirs, PathsError};
use fulmar::host::tender;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0}")]
    Image(#[from] ImageError),
    #[error("{0}")]
    Paths(#[from] PathsError),
    #[error("cannot print the report: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn run(
    dir: &Option<PathBuf>,
    path: &Path,
    json: bool,
    compressed: bool,
) -> Result<(), InspectError> {
    let compression = if compressed {
        Compression::Zlib
    } else {
        Compression::Detect
    };
    let info = image::load(path, compression)?.info;
    let dirs = Dirs::resolve(dir.clone(), Some(PathBuf::new()))?;
    let tender = match tender::find_on_path(info.target, info.abi_version, &dirs.data) {
        Ok(t) => TenderReport::Found {
            path: t.path.display().to_string(),
            abi_version: t.abi_version,
        },
        Err(e) => TenderReport::Missing {
            error: e.to_string(),
        },
    };
    let report = InspectReport {
        image: info,
        tender,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", human(path, &report));
    }
    Ok(())
}

fn human(path: &Path, report: &InspectReport) -> String {
    let ImageInfo {
        target,
        abi_version,
        manifest_version,
        devices,
        sha256,
        compressed,
        size,
    } = &report.image;
    let packing = if *compressed {
        "zlib-compressed"
    } else {
        "plain"
    };
    let mut out = format!(
        "image     {}\n\
         format    {packing} ELF, {size} bytes uncompressed\n\
         sha256    {sha256}\n\
         target    {target}, ABI version {abi_version}\n\
         manifest  version {manifest_version}, {} device{}\n",
        path.display(),
        devices.len(),
        if devices.len() == 1 { "" } else { "s" },
    );
    let width = devices.iter().map(|d| d.name.len()).max().unwrap_or(0);
    for d in devices {
        out += &format!("  {:width$}  {}\n", d.name, d.kind);
    }
    out += &match &report.tender {
        TenderReport::Found { path, abi_version } => {
            format!("tender    {path} (ABI version {abi_version})\n")
        }
        TenderReport::Missing { error } => format!("tender    none: {error}\n"),
    };
    out
}
