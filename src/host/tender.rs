//! Tenders: find the `solo5-<target>` program that will run an image and check
//! that it speaks the image's ABI version.

use crate::api::image::Target;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tender a probe accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tender {
    pub path: PathBuf,
    pub target: Target,
    pub abi_version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenderError {
    #[error("no tender for {target} ABI {abi}: looked for {} in {}; install Solo5's solo5-{target} or put it in the data directory", names(*.target, *.abi), list(.looked))]
    NotFound {
        target: Target,
        abi: u32,
        looked: Vec<PathBuf>,
    },
    #[error(
        "{path} speaks ABI version {found}, the image needs {wanted}: install a Solo5 release with ABI {wanted} as solo5-{target}.{wanted} in the data directory"
    )]
    AbiMismatch {
        path: PathBuf,
        target: Target,
        found: u32,
        wanted: u32,
    },
    #[error("{path} --version did not work ({why}): check that it is a Solo5 tender")]
    Probe { path: PathBuf, why: String },
}

fn names(target: Target, abi: u32) -> String {
    format!("solo5-{target}.{abi} and solo5-{target}")
}

fn list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directory".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long `--version` may take before the probe gives up on a tender.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds the tender for `target` speaking ABI `abi`: the versioned name, then the
/// plain one, in the data directory first and on `path` (a `PATH` value) after it.
/// A candidate with the wrong ABI is passed over for the next one; if none fits,
/// the first mismatch is reported, since it names the program the operator
/// probably meant.
pub fn find(
    target: Target,
    abi: u32,
    data_dir: &Path,
    path: Option<OsString>,
) -> Result<Tender, TenderError> {
    find_with(target, abi, data_dir, path, probe)
}

fn find_with(
    target: Target,
    abi: u32,
    data_dir: &Path,
    path: Option<OsString>,
    probe: impl Fn(&Path) -> Result<u32, TenderError>,
) -> Result<Tender, TenderError> {
    let mut dirs = vec![data_dir.to_path_buf()];
    dirs.extend(path.iter().flat_map(std::env::split_paths));
    let file_names = [format!("solo5-{target}.{abi}"), format!("solo5-{target}")];
    let mut first_failure = None;
    for dir in &dirs {
        for name in &file_names {
            let candidate = dir.join(name);
            if !is_executable(&candidate) {
                continue;
            }
            match probe(&candidate) {
                Ok(found) if found == abi => {
                    return Ok(Tender {
                        path: candidate,
                        target,
                        abi_version: found,
                    });
                }
                Ok(found) => {
                    first_failure.get_or_insert(TenderError::AbiMismatch {
                        path: candidate,
                        target,
                        found,
                        wanted: abi,
                    });
                }
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
    }
    Err(first_failure.unwrap_or(TenderError::NotFound {
        target,
        abi,
        looked: dirs,
    }))
}

/// Remembers what each tender's `--version` said, so that a launch does not
/// spawn it every time. A tender replaced on disk (another inode, size or
/// modification time) is probed again.
#[derive(Debug, Default)]
pub struct ProbeCache {
    seen: Mutex<HashMap<PathBuf, (Stamp, u32)>>,
}

type Stamp = (u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl ProbeCache {
    /// [`find`], probing each candidate at most once per version of its file.
    pub fn find(
        &self,
        target: Target,
        abi: u32,
        data_dir: &Path,
        path: Option<OsString>,
    ) -> Result<Tender, TenderError> {
        find_with(target, abi, data_dir, path, |p| self.probe(p))
    }

    fn probe(&self, path: &Path) -> Result<u32, TenderError> {
        let before = stamp(path);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(now), Some((then, abi))) = (before, seen.get(path))
            && now == *then
        {
            return Ok(*abi);
        }
        drop(seen);
        let abi = probe(path)?;
        // Only remember a probe of the file as it still is.
        if let Some(now) = before.filter(|b| stamp(path) == Some(*b)) {
            seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.insert(path.to_owned(), (now, abi));
        }
        Ok(abi)
    }
}

/// Like [`find`], with the process's own `PATH`.
pub fn find_on_path(target: Target, abi: u32, data_dir: &Path) -> Result<Tender, TenderError> {
    find(target, abi, data_dir, std::env::var_os("PATH"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `TENDER --version` and reads the `ABI version N` line it prints (to
/// stderr on real tenders; stdout is read too).
pub fn probe(path: &Path) -> Result<u32, TenderError> {
    let fail = |why: String| TenderError::Probe {
        path: path.to_owned(),
        why,
    };
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let readers = [
        child.stdout.take().map(read_all),
        child.stderr.take().map(read_all),
    ];
    let status = wait_with_timeout(&mut child, PROBE_TIMEOUT).map_err(fail)?;
    let output: String = readers
        .into_iter()
        .flatten()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    if !status.success() {
        return Err(fail(format!("{status}")));
    }
    abi_line(&output).ok_or_else(|| fail("it printed no \"ABI version N\" line".into()))
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A tender that prints garbage must not stop the probe; what was read is used.
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // Best effort: the child may have exited between the two calls.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The N of the first line that reads `ABI version N`.
fn abi_line(output: &str) -> Option<u32> {
    output.lines().find_map(|line| {
        line.trim()
            .strip_prefix("ABI version ")?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake tender that counts its probes in a file beside it.
    fn counting_tender(dir: &Path, abi: u32) -> PathBuf {
        let path = dir.join("solo5-hvt");
        let script = format!(
            "#!/bin/sh\necho x >> {}/probes\necho 'ABI version {abi}' >&2\n",
            dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn probes(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("probes")).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn the_cache_probes_once_until_the_tender_changes() {
        let dir = tempfile::tempdir().unwrap();
        let tender = counting_tender(dir.path(), 2);
        let cache = ProbeCache::default();
        for _ in 0..3 {
            let found = cache.find(Target::Hvt, 2, dir.path(), None).unwrap();
            assert_eq!(found.path, tender);
        }
        assert_eq!(probes(dir.path()), 1);
        // Replaced by another release: probed again, and its ABI is seen.
        std::fs::remove_file(&tender).unwrap();
        counting_tender(dir.path(), 3);
        let err = cache.find(Target::Hvt, 2, dir.path(), None).unwrap_err();
        assert!(
            matches!(err, TenderError::AbiMismatch { found: 3, .. }),
            "{err}"
        );
        assert_eq!(probes(dir.path()), 2);
    }

    #[test]
    fn reads_the_abi_line_among_others() {
        let out = "solo5-hvt tender, version v0.12.1-7-g469c1a8\nABI version 2\n";
        assert_eq!(abi_line(out), Some(2));
        assert_eq!(abi_line("solo5-hvt tender\n"), None);
        assert_eq!(abi_line("ABI version two\n"), None);
    }
}
