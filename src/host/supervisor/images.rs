//! The image store: every image a unikernel was created from, kept by digest
//! in `<data>/images/<sha256>` so restarts never need the client again.

use super::SupervisorError;
use super::saved::ImageFacts;
use super::unit::StoredImage;
use crate::api::image::Target;
use crate::host::image::{self, Compression, Image};
use std::io::Write;
use std::path::{Path, PathBuf};

fn dir(data: &Path) -> PathBuf {
    data.join("images")
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let path = path.to_owned();
    move |source| SupervisorError::Io { what, path, source }
}

/// Temporary files in the image store: images being stored, uploads being
/// received (the daemon's upload handler writes there too).
const TEMP_PREFIXES: [&str; 2] = [".image-", ".upload-"];

/// Removes the temporary files a killed daemon left in the image store; only
/// for start-up, when the data directory's lock keeps anyone else from
/// writing them. Returns how many were removed.
pub(super) fn clean_stale(data: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(data)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| TEMP_PREFIXES.iter().any(|p| n.starts_with(p)))
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .filter(|e| match std::fs::remove_file(e.path()) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(path = %e.path().display(), "cannot remove an unfinished image: {err}");
                false
            }
        })
        .count()
}

/// Where the image with `image`'s digest is (or will be) kept.
pub(super) fn stored(data: &Path, image: &Image) -> StoredImage {
    StoredImage::new(&image.info, dir(data).join(&image.info.sha256))
}

/// A unikernel's image as the state file recorded it, for when the image
/// itself cannot be read. A state file too old to record the facts gets
/// those of an hvt image without devices: the listing is then only a
/// placeholder until the image is back.
pub(super) fn recorded(data: &Path, digest: &str, facts: Option<&ImageFacts>) -> StoredImage {
    StoredImage {
        target: facts.map_or(Target::Hvt, |f| f.target),
        abi_version: facts.map_or(0, |f| f.abi_version),
        devices: facts.map(|f| f.devices.clone()).unwrap_or_default(),
        digest: digest.to_owned(),
        path: dir(data).join(digest),
    }
}

/// How long an image nothing refers to is kept after it was last sent: the
/// time between `put-image` and the `create` that names it.
pub(super) const UNCLAIMED_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Keeps the uncompressed image (0600), written to a temporary file, synced
/// and renamed, so a crash leaves the old state or the whole image. One sent
/// again counts as just sent, for [`collect`]'s grace.
pub(super) fn store(data: &Path, image: &Image) -> Result<StoredImage, SupervisorError> {
    let stored = stored(data, image);
    if stored.path.exists() {
        std::fs::File::options()
            .write(true)
            .open(&stored.path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(io("mark as just sent", &stored.path))?;
        return Ok(stored);
    }
    let dir = dir(data);
    crate::host::paths::private_dir(&dir).map_err(io("create", &dir))?;
    // A unique name: two creates of the same image may write it at once.
    let mut tmp = tempfile::Builder::new()
        .prefix(".image-")
        .tempfile_in(&dir)
        .map_err(io("create a temporary file in", &dir))?;
    tmp.write_all(&image.elf)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("write", tmp.path()))?;
    tmp.persist(&stored.path)
        .map_err(|e| io("store the image as", &stored.path)(e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", &dir))?;
    Ok(stored)
}

/// An image kept by [`store`], read back and checked against its digest.
pub(super) fn load(data: &Path, digest: &str) -> Result<Image, SupervisorError> {
    let not_found = || SupervisorError::NoImage(digest.to_owned());
    if !is_digest(digest) {
        return Err(not_found());
    }
    let path = dir(data).join(digest);
    if !path.is_file() {
        return Err(not_found());
    }
    let image = image::load(&path, Compression::Detect)?;
    if image.info.sha256 != digest {
        return Err(SupervisorError::ImageChanged(path));
    }
    Ok(image)
}

/// Deletes every stored image that no digest in `used` names and that was
/// not sent within [`UNCLAIMED_GRACE`]; returns the bytes freed. A failure
/// to delete one is logged and the rest go on.
pub(super) fn collect(data: &Path, used: &std::collections::BTreeSet<String>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir(data)) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(digest) = name.to_str().filter(|n| is_digest(n)) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_none_or(|age| age < UNCLAIMED_GRACE);
        if used.contains(digest) || !meta.is_file() || recent {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => freed += meta.len(),
            Err(e) => tracing::warn!(
                "cannot delete the unused image {}: {e}",
                entry.path().display()
            ),
        }
    }
    freed
}

fn is_digest(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
