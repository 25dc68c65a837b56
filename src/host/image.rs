//! Solo5 images: the ELF file, its two notes, compression and digest.
//!
//! An image is read once, as a stream: each chunk is decompressed (when the file
//! is zlib), hashed while it is still in cache, and appended to the one buffer
//! that becomes the ELF handed to the tender.
//!
//! goblin reads the ELF header, program headers and section headers; the notes
//! are decoded here from the raw bytes at the offsets Solo5's headers give (the
//! constants below). goblin's note iterator aligns a note's descriptor to its
//! section's alignment (8 for the manifest) whereas Solo5 puts it at byte 20 and
//! counts 4 padding bytes in `descsz`, so it would misread the manifest. A note is found the way a tender
//! finds it: the note at the start of a `PT_NOTE` segment, owner "Solo5", type
//! ABI1 or MFT1. Section headers are consulted only to explain a missing note.

use crate::api::image::{Device, DeviceKind, ImageInfo, Target};
use flate2::{Decompress, FlushDecompress, Status};
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Elf, Header, ProgramHeader, SectionHeader, header, program_header};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The largest uncompressed image fulmar reads (hvt runs at most 4096 MB of
/// guest memory, so no runnable image is larger); it also stops zlib bombs.
pub const MAX_IMAGE_SIZE: u64 = 4 << 30;

/// Bytes read, decompressed and hashed at a time: small enough to stay in cache
/// between the copy and the digest.
const CHUNK: usize = 256 << 10;

const NOTE_OWNER: &[u8; 6] = b"Solo5\0";
/// namesz, descsz, type, then the owner padded to 8 bytes.
const NOTE_HEADER: usize = 20;
const NT_ABI: u32 = 0x3149_4241;
const NT_MANIFEST: u32 = 0x3154_464d;
const ABI_DESC: usize = 16;
const MANIFEST_VERSION: u32 = 1;
/// Padding, version and entry count before the first entry.
const MANIFEST_HEAD: usize = 12;
const MANIFEST_MAX_ENTRIES: u32 = 64;
const ENTRY: usize = 104;
const ENTRY_NAME: usize = 68;
/// Bytes 72..104 of an entry belong to the tender at run time.
const ENTRY_RUNTIME: usize = 72;
const ENTRY_ATTACHED: usize = 96;
const BLOCK_BASIC: u32 = 1;
const NET_BASIC: u32 = 2;
const RESERVED_FIRST: u32 = 0x4000_0000;
const ELF64_HEADER: usize = 64;
const ELF64_PHDR: usize = 56;
/// The bytes of a compressed image within which its program headers must lie.
const HEADERS_WINDOW: u64 = 64 << 10;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

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

/// One of the two Solo5 notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    Abi,
    Manifest,
}

impl NoteKind {
    /// The section the Solo5 toolchain puts the note in.
    pub fn section(self) -> &'static str {
        match self {
            NoteKind::Abi => ".note.solo5.abi",
            NoteKind::Manifest => ".note.solo5.manifest",
        }
    }

    fn note_type(self) -> u32 {
        match self {
            NoteKind::Abi => NT_ABI,
            NoteKind::Manifest => NT_MANIFEST,
        }
    }
}

impl fmt::Display for NoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoteKind::Abi => "ABI note",
            NoteKind::Manifest => "manifest",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the image is empty: give a Solo5 unikernel image")]
    Empty,
    #[error(
        "the image is {size} bytes uncompressed, more than the {limit} bytes fulmar accepts: \
         give a Solo5 unikernel image (a zlib bomb also ends here)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "the image inflates past byte {end}, where its ELF headers say it ends: \
         a zlib bomb or a corrupt image, fetch the image again"
    )]
    PastElfEnd { end: u64 },
    #[error("cannot allocate {size} bytes to hold the image: free some memory and retry")]
    OutOfMemory { size: u64 },
    #[error(
        "not zlib-compressed although --compressed says so (the file starts with {start}): \
         drop --compressed for a plain image"
    )]
    NotZlib { start: String },
    #[error("gzip file: fulmar reads zlib-compressed images; gunzip it first")]
    Gzip,
    #[error("corrupt zlib stream at compressed byte {offset}: {why}: fetch the image again")]
    Zlib { offset: u64, why: String },
    #[error(
        "the zlib stream stops before its end (after {offset} compressed bytes): \
         the file is truncated, fetch the image again"
    )]
    ZlibTruncated { offset: u64 },
    #[error(
        "data follows the end of the zlib stream at compressed byte {offset}: \
         the file is not one zlib-compressed image"
    )]
    ZlibTrailing { offset: u64 },
    #[error("not an ELF file (magic is {magic}): give a Solo5 unikernel image")]
    NotElf { magic: String },
    #[error("32-bit ELF: Solo5 images are 64-bit")]
    Elf32,
    #[error("big-endian ELF: Solo5 images are little-endian")]
    BigEndian,
    #[error("bad ELF header: {field} is {value}, {expected}")]
    Header {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("truncated image: the {what} ends at byte {end} but the file has {size} bytes")]
    Truncated {
        what: String,
        end: u128,
        size: usize,
    },
    #[error("malformed ELF: {0}")]
    Elf(String),
    #[error("not a Solo5 image: no {note} ({}){hint}", .note.section())]
    MissingNote { note: NoteKind, hint: String },
    #[error(
        "bad {note}: descsz {descsz} runs past its PT_NOTE segment ({room} bytes after the \
         note header): the image is truncated or corrupt"
    )]
    NoteTruncated {
        note: NoteKind,
        descsz: u32,
        room: usize,
    },
    #[error("bad ABI note: {0}")]
    Abi(AbiFault),
    #[error("bad manifest: {0}")]
    Manifest(ManifestFault),
    #[error("bad manifest entry {index}: {fault}")]
    Entry { index: u32, fault: EntryFault },
}

/// What is wrong with an ABI note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiFault {
    #[error("descsz {0}, an ABI note has {ABI_DESC} (target, version, 8 reserved bytes)")]
    Size(usize),
    #[error("target {0} is not a Solo5 target ({codes})", codes = target_codes())]
    Target(u32),
    #[error("ABI version 0, Solo5 ABI versions start at 1")]
    Version0,
}

/// What is wrong with a manifest as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestFault {
    #[error(
        "descsz {0}, a manifest has at least {MANIFEST_HEAD} bytes (padding, version, entry count)"
    )]
    TooShort(usize),
    #[error("version {0}, fulmar understands version {MANIFEST_VERSION}")]
    Version(u32),
    #[error("{0} entries, at most {MANIFEST_MAX_ENTRIES}")]
    TooMany(u32),
    #[error("0 entries, there is at least the reserved entry 0")]
    NoEntries,
    #[error(
        "descsz {descsz} does not fit {entries} entries, which need \
         {MANIFEST_HEAD} + {ENTRY} x {entries} = {}", manifest_size(*.entries)
    )]
    Size { descsz: usize, entries: u32 },
}

/// What is wrong with one manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryFault {
    #[error("name is not NUL-terminated within {ENTRY_NAME} bytes")]
    Unterminated,
    #[error(
        "entry 0 must be the reserved one (empty name, type RESERVED_FIRST 0x40000000), \
         found name {name:?} type {kind:#x}"
    )]
    NotReserved { name: String, kind: u32 },
    #[error("name is empty, a device name has 1 to {} letters or digits", ENTRY_NAME - 1)]
    EmptyName,
    #[error("name {0:?} has a character that is not a letter or digit (A-Z, a-z, 0-9)")]
    BadName(String),
    #[error(
        "device {name:?} has type {kind:#x}, not a device type \
         (BLOCK_BASIC=1, NET_BASIC=2)"
    )]
    Type { name: String, kind: u32 },
    #[error("attached is {0}, an image file has 0 there (the tender sets it at run time)")]
    Attached(u8),
    #[error(
        "byte {offset} is {value:#04x}, bytes {ENTRY_RUNTIME}..{ENTRY} of an entry \
         are zero in an image file (the tender fills them at run time)"
    )]
    RuntimeBytes { offset: usize, value: u8 },
}

fn target_codes() -> String {
    Target::ALL
        .iter()
        .map(|t| format!("{t}={}", t.code()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn manifest_size(entries: u32) -> u64 {
    MANIFEST_HEAD as u64 + ENTRY as u64 * u64::from(entries)
}

/// Reads an image file, decompressing and hashing it as it streams in.
pub fn load(path: &Path, compression: Compression) -> Result<Image, ImageError> {
    load_limited(path, compression, MAX_IMAGE_SIZE)
}

/// [`load`], refusing images larger than `max_size` bytes uncompressed.
pub fn load_limited(
    path: &Path,
    compression: Compression,
    max_size: u64,
) -> Result<Image, ImageError> {
    let io_error = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let file_size = file.metadata().map_err(io_error)?.len();
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let head = reader.fill_buf().map_err(io_error)?;
    let compressed = is_compressed(head, compression)?;
    let (elf, sha256) = if compressed {
        inflate(&mut FileInput { reader, path }, max_size)?
    } else {
        check_magic(head)?;
        check_size(file_size, max_size)?;
        read_plain(reader, path, file_size, max_size)?
    };
    describe(elf, sha256, compressed)
}

/// An image already in memory: `raw` is the file's content.
pub fn from_bytes(raw: Vec<u8>, compression: Compression) -> Result<Image, ImageError> {
    from_bytes_limited(raw, compression, MAX_IMAGE_SIZE)
}

/// [`from_bytes`], refusing images larger than `max_size` bytes uncompressed.
pub fn from_bytes_limited(
    raw: Vec<u8>,
    compression: Compression,
    max_size: u64,
) -> Result<Image, ImageError> {
    let compressed = is_compressed(&raw, compression)?;
    let (elf, sha256) = if compressed {
        inflate(&mut raw.as_slice(), max_size)?
    } else {
        check_size(raw.len() as u64, max_size)?;
        let sha256 = hex::encode(Sha256::digest(&raw));
        (raw, sha256)
    };
    describe(elf, sha256, compressed)
}

fn describe(elf: Vec<u8>, sha256: String, compressed: bool) -> Result<Image, ImageError> {
    let notes = parse_notes(&elf)?;
    let info = ImageInfo {
        target: notes.target,
        abi_version: notes.abi_version,
        manifest_version: notes.manifest_version,
        devices: notes.devices,
        sha256,
        compressed,
        size: elf.len() as u64,
    };
    Ok(Image { info, elf })
}

/// Decides from the first bytes whether the file is zlib, as `compression` allows.
fn is_compressed(head: &[u8], compression: Compression) -> Result<bool, ImageError> {
    if head.is_empty() {
        return Err(ImageError::Empty);
    }
    if head.starts_with(&GZIP_MAGIC) {
        return Err(ImageError::Gzip);
    }
    let zlib = is_zlib_header(head);
    if compression == Compression::Zlib && !zlib {
        return Err(ImageError::NotZlib {
            start: hex_bytes(&head[..head.len().min(4)]),
        });
    }
    Ok(zlib)
}

/// RFC 1950: method 8 (deflate), a window of at most 32 KiB, and a check value
/// making the first two bytes a multiple of 31. ELF's 0x7f never passes.
fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_size(size: u64, max_size: u64) -> Result<(), ImageError> {
    if size > max_size {
        return Err(ImageError::TooLarge {
            size,
            limit: max_size,
        });
    }
    Ok(())
}

/// Reads a plain image straight into a buffer sized from the file, hashing each
/// chunk as it lands.
fn read_plain(
    reader: BufReader<File>,
    path: &Path,
    file_size: u64,
    max_size: u64,
) -> Result<(Vec<u8>, String), ImageError> {
    let mut elf = Vec::new();
    let capacity = usize::try_from(file_size.min(max_size)).unwrap_or(usize::MAX);
    elf.try_reserve_exact(capacity)
        .map_err(|_| ImageError::OutOfMemory { size: file_size })?;
    let mut hasher = Sha256::new();
    hasher.update(reader.buffer());
    elf.extend_from_slice(reader.buffer());
    let mut file = reader.into_inner();
    loop {
        let start = elf.len();
        let read = (&mut file)
            .take(CHUNK as u64)
            .read_to_end(&mut elf)
            .map_err(|source| ImageError::Io {
                path: path.to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        check_size(elf.len() as u64, max_size)?;
        hasher.update(&elf[start..]);
    }
    Ok((elf, hex::encode(hasher.finalize())))
}

/// Compressed bytes for [`inflate`]: a file (whose errors name it) or memory.
trait Input {
    fn fill(&mut self) -> Result<&[u8], ImageError>;
    fn consume(&mut self, amount: usize);
}

impl Input for &[u8] {
    fn fill(&mut self) -> Result<&[u8], ImageError> {
        Ok(self)
    }

    fn consume(&mut self, amount: usize) {
        *self = self.get(amount..).unwrap_or_default();
    }
}

struct FileInput<'a> {
    reader: BufReader<File>,
    path: &'a Path,
}

impl Input for FileInput<'_> {
    fn fill(&mut self) -> Result<&[u8], ImageError> {
        self.reader.fill_buf().map_err(|source| ImageError::Io {
            path: self.path.to_owned(),
            source,
        })
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount);
    }
}

/// Decompresses one zlib stream, hashing each chunk while it is in cache, and
/// refuses output beyond `max_size` (before allocating it).
fn inflate(input: &mut impl Input, max_size: u64) -> Result<(Vec<u8>, String), ImageError> {
    let mut inflater = Decompress::new(true);
    let mut chunk = vec![0; CHUNK];
    let mut elf = Vec::new();
    let mut hasher = Sha256::new();
    // Where the ELF ends by its headers, once they are in: nothing past it is
    // inflated, so a bomb costs no more memory than the image it claims to be.
    let mut extent = None;
    loop {
        let compressed = input.fill()?;
        let at_end = compressed.is_empty();
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let flush = if at_end {
            FlushDecompress::Finish
        } else {
            FlushDecompress::None
        };
        let status = inflater
            .decompress(compressed, &mut chunk, flush)
            .map_err(|e| ImageError::Zlib {
                offset: inflater.total_in(),
                why: e.to_string(),
            })?;
        let consumed = (inflater.total_in() - in_before) as usize;
        let produced = (inflater.total_out() - out_before) as usize;
        input.consume(consumed);
        let out = &chunk[..produced];
        let size = elf.len() as u64 + out.len() as u64;
        check_size(size, max_size)?;
        if let Some(end) = extent {
            check_extent(size, end)?;
        }
        elf.try_reserve(out.len())
            .map_err(|_| ImageError::OutOfMemory { size })?;
        hasher.update(out);
        elf.extend_from_slice(out);
        if extent.is_none() {
            extent = declared_extent(&elf)?;
            if let Some(end) = extent {
                check_extent(size, end)?;
                elf.try_reserve_exact(usize::try_from(end).unwrap_or(usize::MAX) - elf.len())
                    .map_err(|_| ImageError::OutOfMemory { size: end })?;
            }
        }
        match status {
            Status::StreamEnd => break,
            _ if consumed == 0 && produced == 0 => {
                let offset = inflater.total_in();
                return Err(if at_end {
                    ImageError::ZlibTruncated { offset }
                } else {
                    ImageError::Zlib {
                        offset,
                        why: "the stream makes no progress".into(),
                    }
                });
            }
            _ => {}
        }
    }
    if !input.fill()?.is_empty() {
        return Err(ImageError::ZlibTrailing {
            offset: inflater.total_in(),
        });
    }
    Ok((elf, hex::encode(hasher.finalize())))
}

/// Where an ELF arriving through zlib may end, from its headers: past its
/// header and program header table, every segment's file bytes and the
/// section header table (which linkers put last). `None` until those headers
/// are in; refused at once if the bytes are not an ELF, or its program
/// headers are not within [`HEADERS_WINDOW`] (a linker puts them right after
/// the ELF header), so no bomb is inflated to learn that.
fn declared_extent(elf: &[u8]) -> Result<Option<u64>, ImageError> {
    if elf.len() < ELF64_HEADER {
        return Ok(None);
    }
    check_magic(elf)?;
    let field = |at: usize, len: usize| {
        elf[at..at + len]
            .iter()
            .rev()
            .fold(0u64, |n, b| n << 8 | u64::from(*b))
    };
    let (phoff, shoff) = (field(0x20, 8), field(0x28, 8));
    let (phnum, shentsize, shnum) = (field(0x38, 2), field(0x3a, 2), field(0x3c, 2));
    let table_end = phoff.saturating_add(phnum * ELF64_PHDR as u64);
    if table_end > HEADERS_WINDOW {
        return Err(ImageError::Elf(format!(
            "the program headers end at byte {table_end}, past the first {HEADERS_WINDOW} \
             bytes where a compressed image must have them"
        )));
    }
    if (elf.len() as u64) < table_end {
        return Ok(None);
    }
    let segments_end = (0..phnum)
        .map(|i| phoff as usize + i as usize * ELF64_PHDR)
        .map(|ph| field(ph + 8, 8).saturating_add(field(ph + 32, 8)))
        .max()
        .unwrap_or(0);
    let sections_end = shoff.saturating_add(shentsize * shnum);
    Ok(Some(table_end.max(segments_end).max(sections_end)))
}

fn check_extent(size: u64, end: u64) -> Result<(), ImageError> {
    if size > end {
        return Err(ImageError::PastElfEnd { end });
    }
    Ok(())
}

/// Decodes and checks the ABI and manifest notes of an uncompressed image.
pub fn parse_notes(elf: &[u8]) -> Result<Notes, ImageError> {
    let header = check_header(elf)?;
    let program_headers = ProgramHeader::parse(
        elf,
        header.e_phoff as usize,
        usize::from(header.e_phnum),
        elf64(),
    )
    .map_err(|e| ImageError::Elf(e.to_string()))?;
    let mut abi = None;
    let mut manifest = None;
    let mut strangers = Vec::new();
    for (index, ph) in program_headers.iter().enumerate() {
        if ph.p_type != program_header::PT_NOTE {
            continue;
        }
        let segment = segment(elf, index, ph)?;
        let Some(n_type) = solo5_note_type(segment) else {
            continue;
        };
        let (slot, kind) = match n_type {
            NT_ABI => (&mut abi, NoteKind::Abi),
            NT_MANIFEST => (&mut manifest, NoteKind::Manifest),
            _ => {
                strangers.push((index, n_type));
                continue;
            }
        };
        if slot.is_none() {
            *slot = Some(note_desc(segment, kind)?);
        }
    }
    let missing = |note| ImageError::MissingNote {
        note,
        hint: missing_hint(elf, &header, &program_headers, note, &strangers),
    };
    let (target, abi_version) = decode_abi(abi.ok_or_else(|| missing(NoteKind::Abi))?)?;
    let (manifest_version, devices) =
        decode_manifest(manifest.ok_or_else(|| missing(NoteKind::Manifest))?)?;
    Ok(Notes {
        target,
        abi_version,
        manifest_version,
        devices,
    })
}

fn elf64() -> Ctx {
    Ctx::new(Container::Big, Endian::Little)
}

fn check_magic(bytes: &[u8]) -> Result<(), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if !bytes.starts_with(header::ELFMAG) {
        return Err(ImageError::NotElf {
            magic: hex_bytes(&bytes[..bytes.len().min(header::SELFMAG)]),
        });
    }
    Ok(())
}

/// The ELF header checks: what a tender loads is a 64-bit little-endian static
/// executable for x86-64 or aarch64.
fn check_header(elf: &[u8]) -> Result<Header, ImageError> {
    check_magic(elf)?;
    if elf.len() < ELF64_HEADER {
        return Err(ImageError::Truncated {
            what: "ELF header".into(),
            end: ELF64_HEADER as u128,
            size: elf.len(),
        });
    }
    let bad = |field, value: String, expected| ImageError::Header {
        field,
        value,
        expected,
    };
    match elf[header::EI_CLASS] {
        header::ELFCLASS64 => {}
        header::ELFCLASS32 => return Err(ImageError::Elf32),
        class => {
            return Err(bad(
                "class",
                class.to_string(),
                "Solo5 images are 2 (64-bit)",
            ));
        }
    }
    match elf[header::EI_DATA] {
        header::ELFDATA2LSB => {}
        header::ELFDATA2MSB => return Err(ImageError::BigEndian),
        data => {
            return Err(bad(
                "data encoding",
                data.to_string(),
                "Solo5 images are 1 (little-endian)",
            ));
        }
    }
    let header = Elf::parse_header(elf).map_err(|e| ImageError::Elf(e.to_string()))?;
    if header.e_type != header::ET_EXEC {
        return Err(bad(
            "type",
            format!("{} ({})", header.e_type, header::et_to_str(header.e_type)),
            "Solo5 images are 2 (EXEC, a static executable)",
        ));
    }
    if ![header::EM_X86_64, header::EM_AARCH64].contains(&header.e_machine) {
        return Err(bad(
            "machine",
            format!(
                "{} ({})",
                header.e_machine,
                header::machine_to_str(header.e_machine)
            ),
            "Solo5 runs 62 (X86_64) and 183 (AARCH64)",
        ));
    }
    if header.e_phnum > 0 && usize::from(header.e_phentsize) != ELF64_PHDR {
        return Err(bad(
            "program header size",
            header.e_phentsize.to_string(),
            "ELF64 program headers are 56 bytes",
        ));
    }
    let table_end = u128::from(header.e_phoff) + ELF64_PHDR as u128 * u128::from(header.e_phnum);
    if table_end > elf.len() as u128 {
        return Err(ImageError::Truncated {
            what: "program header table".into(),
            end: table_end,
            size: elf.len(),
        });
    }
    Ok(header)
}

/// The bytes of a `PT_NOTE` segment, which must lie within the file.
fn segment<'a>(elf: &'a [u8], index: usize, ph: &ProgramHeader) -> Result<&'a [u8], ImageError> {
    let end = u128::from(ph.p_offset) + u128::from(ph.p_filesz);
    let truncated = || ImageError::Truncated {
        what: format!("PT_NOTE segment (program header {index})"),
        end,
        size: elf.len(),
    };
    let start = usize::try_from(ph.p_offset).map_err(|_| truncated())?;
    let end_at = usize::try_from(end).map_err(|_| truncated())?;
    elf.get(start..end_at).ok_or_else(truncated)
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

/// The type of the note opening `segment` if its owner is Solo5.
fn solo5_note_type(segment: &[u8]) -> Option<u32> {
    let solo5 = segment.len() >= NOTE_HEADER
        && le32(segment, 0) == Some(NOTE_OWNER.len() as u32)
        && segment.get(12..12 + NOTE_OWNER.len()) == Some(NOTE_OWNER.as_slice());
    if solo5 { le32(segment, 8) } else { None }
}

/// The descriptor of a Solo5 note, which must fit in its segment.
fn note_desc(segment: &[u8], kind: NoteKind) -> Result<&[u8], ImageError> {
    let descsz = le32(segment, 4).unwrap_or(0);
    let room = segment.len().saturating_sub(NOTE_HEADER);
    let end = NOTE_HEADER.checked_add(descsz as usize);
    end.and_then(|end| segment.get(NOTE_HEADER..end))
        .ok_or(ImageError::NoteTruncated {
            note: kind,
            descsz,
            room,
        })
}

fn decode_abi(desc: &[u8]) -> Result<(Target, u32), ImageError> {
    let fault = |f| Err(ImageError::Abi(f));
    let (Some(code), Some(version), ABI_DESC) = (le32(desc, 0), le32(desc, 4), desc.len()) else {
        return fault(AbiFault::Size(desc.len()));
    };
    let Some(target) = Target::from_code(code) else {
        return fault(AbiFault::Target(code));
    };
    if version == 0 {
        return fault(AbiFault::Version0);
    }
    Ok((target, version))
}

fn decode_manifest(desc: &[u8]) -> Result<(u32, Vec<Device>), ImageError> {
    let fault = |f| Err(ImageError::Manifest(f));
    let (Some(version), Some(entries)) = (le32(desc, 4), le32(desc, 8)) else {
        return fault(ManifestFault::TooShort(desc.len()));
    };
    if version != MANIFEST_VERSION {
        return fault(ManifestFault::Version(version));
    }
    if entries > MANIFEST_MAX_ENTRIES {
        return fault(ManifestFault::TooMany(entries));
    }
    if entries == 0 {
        return fault(ManifestFault::NoEntries);
    }
    if desc.len() as u64 != manifest_size(entries) {
        return fault(ManifestFault::Size {
            descsz: desc.len(),
            entries,
        });
    }
    let mut devices = Vec::with_capacity(entries as usize - 1);
    for (index, entry) in (0..).zip(desc[MANIFEST_HEAD..].chunks_exact(ENTRY)) {
        let device =
            decode_entry(index, entry).map_err(|fault| ImageError::Entry { index, fault })?;
        devices.extend(device);
    }
    Ok((version, devices))
}

/// One 104-byte entry: the device it declares, or `None` for the reserved entry 0.
fn decode_entry(index: u32, entry: &[u8]) -> Result<Option<Device>, EntryFault> {
    let name_field = &entry[..ENTRY_NAME];
    let name_len = name_field
        .iter()
        .position(|&b| b == 0)
        .ok_or(EntryFault::Unterminated)?;
    let name = String::from_utf8_lossy(&name_field[..name_len]).into_owned();
    let kind = le32(entry, ENTRY_NAME).unwrap_or(0);
    let device = if index == 0 {
        if !name.is_empty() || kind != RESERVED_FIRST {
            return Err(EntryFault::NotReserved { name, kind });
        }
        None
    } else {
        Some(decode_device(name, kind)?)
    };
    check_runtime_bytes(entry)?;
    Ok(device)
}

fn decode_device(name: String, kind: u32) -> Result<Device, EntryFault> {
    if name.is_empty() {
        return Err(EntryFault::EmptyName);
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(EntryFault::BadName(name));
    }
    let kind = match kind {
        BLOCK_BASIC => DeviceKind::Block,
        NET_BASIC => DeviceKind::Net,
        _ => return Err(EntryFault::Type { name, kind }),
    };
    Ok(Device { name, kind })
}

/// `attached` first, since it is the field a tender checks and names.
fn check_runtime_bytes(entry: &[u8]) -> Result<(), EntryFault> {
    match entry.get(ENTRY_ATTACHED) {
        Some(&attached) if attached != 0 => return Err(EntryFault::Attached(attached)),
        _ => {}
    }
    let runtime = entry.get(ENTRY_RUNTIME..).unwrap_or_default();
    match (ENTRY_RUNTIME..).zip(runtime).find(|(_, b)| **b != 0) {
        Some((offset, &value)) => Err(EntryFault::RuntimeBytes { offset, value }),
        None => Ok(()),
    }
}

/// Why a note may be missing, when the file says more than "it is not there".
fn missing_hint(
    elf: &[u8],
    header: &Header,
    program_headers: &[ProgramHeader],
    note: NoteKind,
    strangers: &[(usize, u32)],
) -> String {
    if let Some((index, n_type)) = strangers.first() {
        return format!(
            "; the Solo5 note in program header {index} has type {n_type:#x}, \
             the {note} has type {:#x}",
            note.note_type()
        );
    }
    let Some(offset) = section_offset(elf, header, note.section()) else {
        return String::new();
    };
    let holder = program_headers.iter().find(|ph| {
        ph.p_type == program_header::PT_NOTE
            && (ph.p_offset..ph.p_offset.saturating_add(ph.p_filesz)).contains(&offset)
    });
    let section = note.section();
    match holder {
        None => format!(
            "; section {section} exists but no PT_NOTE program header holds it, \
             and a tender reads notes only from PT_NOTE segments"
        ),
        Some(ph) if ph.p_offset != offset => format!(
            "; section {section} does not start its PT_NOTE segment, and a tender reads \
             only the first note of each: link each Solo5 note into a PT_NOTE of its own"
        ),
        Some(_) => format!("; section {section} holds no note owned by \"Solo5\" (namesz 6)"),
    }
}

/// The file offset of the section named `name`. A section table goblin cannot
/// read just has no such section: a tender never looks at sections.
fn section_offset(elf: &[u8], header: &Header, name: &str) -> Option<u64> {
    let sections = SectionHeader::parse(
        elf,
        header.e_shoff as usize,
        usize::from(header.e_shnum),
        elf64(),
    )
    .ok()?;
    let names = section_bytes(elf, sections.get(usize::from(header.e_shstrndx))?)?;
    let named = |section: &&SectionHeader| {
        names
            .get(section.sh_name..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            == Some(name.as_bytes())
    };
    sections.iter().find(named).map(|section| section.sh_offset)
}

fn section_bytes<'a>(elf: &'a [u8], section: &SectionHeader) -> Option<&'a [u8]> {
    let start = usize::try_from(section.sh_offset).ok()?;
    let end = start.checked_add(usize::try_from(section.sh_size).ok()?)?;
    elf.get(start..end)
}
