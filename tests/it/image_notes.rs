//! Image reading: every malformed image our ELF writer can make is
//! refused with the error naming its fault, through the library and through
//! `fulmar inspect`; valid images come back with every field right.

use crate::support;

use fulmar::api::image::{Device, DeviceKind, Target};
use fulmar::host::image::{
    self, AbiFault, Compression, EntryFault, Image, ImageError, ManifestFault, NoteKind,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::elf::{self, ElfImage, Entry, Manifest, Note};

fn hvt(devices: &[Entry]) -> ElfImage {
    ElfImage::solo5(elf::HVT, 2, devices)
}

fn with(devices: &[Entry], change: impl FnOnce(&mut ElfImage)) -> Vec<u8> {
    let mut image = hvt(devices);
    change(&mut image);
    image.to_bytes()
}

fn with_manifest(change: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut manifest = Manifest::new(&[Entry::block("storage"), Entry::net("service0")]);
    change(&mut manifest);
    with(&[], |image| image.set_manifest(&manifest))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn position(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

/// Where the manifest note starts in a writer-made image.
fn manifest_offset(bytes: &[u8]) -> usize {
    position(bytes, &elf::NT_MANIFEST.to_le_bytes()) - 8
}

/// A malformed image: its bytes, how it must be read, the error it must give,
/// and words the one-line message must contain.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    compression: Compression,
    check: fn(&ImageError) -> bool,
    says: &'static str,
}

fn case(
    name: &'static str,
    bytes: Vec<u8>,
    check: fn(&ImageError) -> bool,
    says: &'static str,
) -> Case {
    Case {
        name,
        bytes,
        compression: Compression::Detect,
        check,
        says,
    }
}

fn malformed() -> Vec<Case> {
    let valid = hvt(&[Entry::block("storage")]).to_bytes();
    let mut cases = vec![
        case(
            "empty file",
            vec![],
            |e| matches!(e, ImageError::Empty),
            "the image is empty",
        ),
        case(
            "not ELF",
            b"MZ\x90\x00 a PE file".to_vec(),
            |e| matches!(e, ImageError::NotElf { magic } if magic == "4d 5a 90 00"),
            "not an ELF file (magic is 4d 5a 90 00): give a Solo5 unikernel image",
        ),
        case(
            "3 bytes",
            b"\x7fEL".to_vec(),
            |e| matches!(e, ImageError::NotElf { magic } if magic == "7f 45 4c"),
            "not an ELF file (magic is 7f 45 4c)",
        ),
        case(
            "32-bit ELF",
            with(&[], |i| i.class = 1),
            |e| matches!(e, ImageError::Elf32),
            "32-bit ELF: Solo5 images are 64-bit",
        ),
        case(
            "big-endian ELF",
            with(&[], |i| i.data = 2),
            |e| matches!(e, ImageError::BigEndian),
            "big-endian ELF: Solo5 images are little-endian",
        ),
        case(
            "unknown ELF class",
            with(&[], |i| i.class = 7),
            |e| matches!(e, ImageError::Header { field: "class", .. }),
            "bad ELF header: class is 7, Solo5 images are 2 (64-bit)",
        ),
        case(
            "shared object",
            with(&[], |i| i.e_type = 3),
            |e| matches!(e, ImageError::Header { field: "type", value, .. } if value == "3 (DYN)"),
            "bad ELF header: type is 3 (DYN), Solo5 images are 2 (EXEC",
        ),
        case(
            "ARM machine",
            with(&[], |i| i.machine = 40),
            |e| matches!(e, ImageError::Header { field: "machine", value, .. } if value.starts_with("40 ")),
            "bad ELF header: machine is 40 (ARM), Solo5 runs 62 (X86_64) and 183 (AARCH64)",
        ),
        case(
            "program header size",
            with(&[], |i| i.phentsize = 32),
            |e| {
                matches!(
                    e,
                    ImageError::Header {
                        field: "program header size",
                        ..
                    }
                )
            },
            "program header size is 32, ELF64 program headers are 56 bytes",
        ),
        case(
            "truncated ELF header",
            valid[..40].to_vec(),
            |e| matches!(e, ImageError::Truncated { what, end: 64, size: 40 } if what == "ELF header"),
            "truncated image: the ELF header ends at byte 64 but the file has 40 bytes",
        ),
        case(
            "truncated program headers",
            valid[..100].to_vec(),
            |e| matches!(e, ImageError::Truncated { what, .. } if what == "program header table"),
            "truncated image: the program header table ends at byte",
        ),
        case(
            "file cut inside the manifest",
            valid[..manifest_offset(&valid) + 30].to_vec(),
            |e| matches!(e, ImageError::Truncated { what, .. } if what.contains("PT_NOTE segment (program header 2)")),
            "truncated image: the PT_NOTE segment (program header 2) ends at byte",
        ),
        case(
            "segment beyond the file",
            with(&[], |i| i.abi().segment_size = Some(1 << 40)),
            |e| matches!(e, ImageError::Truncated { what, .. } if what.contains("program header 1")),
            "truncated image: the PT_NOTE segment (program header 1) ends at byte",
        ),
        case(
            "segment offset overflows",
            with(&[], |i| i.abi().segment_size = Some(u64::MAX)),
            |e| matches!(e, ImageError::Truncated { .. }),
            "truncated image",
        ),
        case(
            "manifest descsz beyond its segment",
            with(&[], |i| i.manifest().descsz = Some(12 + 104 + 8)),
            |e| {
                matches!(
                    e,
                    ImageError::NoteTruncated {
                        note: NoteKind::Manifest,
                        descsz: 124,
                        room: 116
                    }
                )
            },
            "bad manifest: descsz 124 runs past its PT_NOTE segment (116 bytes after the note header)",
        ),
        case(
            "ABI descsz beyond its segment",
            with(&[], |i| i.abi().descsz = Some(u32::MAX)),
            |e| {
                matches!(
                    e,
                    ImageError::NoteTruncated {
                        note: NoteKind::Abi,
                        ..
                    }
                )
            },
            "bad ABI note: descsz 4294967295 runs past its PT_NOTE segment",
        ),
        case(
            "no notes",
            with(&[], |i| i.notes.clear()),
            |e| matches!(e, ImageError::MissingNote { note: NoteKind::Abi, hint } if hint.is_empty()),
            "not a Solo5 image: no ABI note (.note.solo5.abi)",
        ),
        case(
            "wrong ABI note type",
            with(&[], |i| i.abi().n_type = 0x1234_5678),
            |e| matches!(e, ImageError::MissingNote { note: NoteKind::Abi, hint } if hint.contains("type 0x12345678")),
            "no ABI note (.note.solo5.abi); the Solo5 note in program header 1 has type 0x12345678, the ABI note has type 0x31494241",
        ),
        case(
            "ABI note owned by someone else",
            with(&[], |i| i.abi().owner = b"Solo6\0".to_vec()),
            |e| {
                matches!(
                    e,
                    ImageError::MissingNote {
                        note: NoteKind::Abi,
                        ..
                    }
                )
            },
            "no ABI note (.note.solo5.abi); section .note.solo5.abi holds no note owned by \"Solo5\"",
        ),
        case(
            "ABI owner without its NUL (namesz 5)",
            with(&[], |i| i.abi().owner = b"Solo5".to_vec()),
            |e| {
                matches!(
                    e,
                    ImageError::MissingNote {
                        note: NoteKind::Abi,
                        ..
                    }
                )
            },
            "no ABI note (.note.solo5.abi)",
        ),
        case(
            "ABI note in a section only",
            with(&[], |i| i.abi().in_segment = false),
            |e| matches!(e, ImageError::MissingNote { note: NoteKind::Abi, hint } if hint.contains("no PT_NOTE")),
            "no ABI note (.note.solo5.abi); section .note.solo5.abi exists but no PT_NOTE program header holds it",
        ),
        case(
            "ABI note behind another note in one segment",
            with(&[], |i| {
                let mut build_id = Note::solo5(".note.gnu.build-id", 4, 3, vec![0xaa; 20]);
                build_id.owner = b"GNU\0".to_vec();
                // 36 bytes of build-id note, then the 36-byte ABI note, as ld
                // merges them without a linker script.
                build_id.segment_size = Some(36 + 36);
                i.abi().in_segment = false;
                i.notes.insert(0, build_id);
            }),
            |e| matches!(e, ImageError::MissingNote { note: NoteKind::Abi, hint } if hint.contains("does not start")),
            "no ABI note (.note.solo5.abi); section .note.solo5.abi does not start its PT_NOTE segment",
        ),
        case(
            "no manifest",
            with(&[], |i| {
                i.notes.pop();
            }),
            |e| {
                matches!(
                    e,
                    ImageError::MissingNote {
                        note: NoteKind::Manifest,
                        ..
                    }
                )
            },
            "not a Solo5 image: no manifest (.note.solo5.manifest)",
        ),
        case(
            "wrong manifest note type",
            with(&[], |i| i.manifest().n_type = elf::NT_ABI + 1),
            |e| {
                matches!(
                    e,
                    ImageError::MissingNote {
                        note: NoteKind::Manifest,
                        ..
                    }
                )
            },
            "no manifest (.note.solo5.manifest); the Solo5 note in program header 2 has type 0x31494242, the manifest has type 0x3154464d",
        ),
        case(
            "ABI target 99",
            with(&[], |i| *i.abi() = Note::abi(99, 2)),
            |e| matches!(e, ImageError::Abi(AbiFault::Target(99))),
            "bad ABI note: target 99 is not a Solo5 target (hvt=1, spt=2, virtio=3, muen=4, genode=5, xen=6)",
        ),
        case(
            "ABI target 0",
            with(&[], |i| *i.abi() = Note::abi(0, 2)),
            |e| matches!(e, ImageError::Abi(AbiFault::Target(0))),
            "bad ABI note: target 0 is not a Solo5 target",
        ),
        case(
            "ABI version 0",
            with(&[], |i| *i.abi() = Note::abi(elf::HVT, 0)),
            |e| matches!(e, ImageError::Abi(AbiFault::Version0)),
            "bad ABI note: ABI version 0, Solo5 ABI versions start at 1",
        ),
        case(
            "ABI descsz 8",
            with(&[], |i| i.abi().desc.truncate(8)),
            |e| matches!(e, ImageError::Abi(AbiFault::Size(8))),
            "bad ABI note: descsz 8, an ABI note has 16",
        ),
        case(
            "manifest version 2",
            with_manifest(|m| m.version = 2),
            |e| matches!(e, ImageError::Manifest(ManifestFault::Version(2))),
            "bad manifest: version 2, fulmar understands version 1",
        ),
        case(
            "65 entries",
            with_manifest(|m| m.entries.resize(65, Entry::block("disk"))),
            |e| matches!(e, ImageError::Manifest(ManifestFault::TooMany(65))),
            "bad manifest: 65 entries, at most 64",
        ),
        case(
            "entry count above the size",
            with_manifest(|m| m.count = Some(4)),
            |e| {
                matches!(
                    e,
                    ImageError::Manifest(ManifestFault::Size {
                        descsz: 324,
                        entries: 4
                    })
                )
            },
            "bad manifest: descsz 324 does not fit 4 entries, which need 12 + 104 x 4 = 428",
        ),
        case(
            "0 entries",
            with_manifest(|m| m.entries.clear()),
            |e| matches!(e, ImageError::Manifest(ManifestFault::NoEntries)),
            "bad manifest: 0 entries, there is at least the reserved entry 0",
        ),
        case(
            "manifest descsz 8",
            with(&[], |i| i.manifest().desc.truncate(8)),
            |e| matches!(e, ImageError::Manifest(ManifestFault::TooShort(8))),
            "bad manifest: descsz 8, a manifest has at least 12 bytes",
        ),
        case(
            "entry 0 not reserved",
            with_manifest(|m| m.entries[0] = Entry::block("first")),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 0,
                        fault: EntryFault::NotReserved { kind: 1, .. }
                    }
                )
            },
            "bad manifest entry 0: entry 0 must be the reserved one (empty name, type RESERVED_FIRST 0x40000000), found name \"first\" type 0x1",
        ),
        case(
            "entry 0 reserved with a name",
            with_manifest(|m| m.entries[0].name = b"x".to_vec()),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 0,
                        fault: EntryFault::NotReserved { .. }
                    }
                )
            },
            "bad manifest entry 0: entry 0 must be the reserved one",
        ),
        case(
            "name without NUL",
            with_manifest(|m| {
                m.entries.push(Entry::block("disk"));
                m.entries[3].name = vec![b'a'; 68];
            }),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 3,
                        fault: EntryFault::Unterminated
                    }
                )
            },
            "bad manifest entry 3: name is not NUL-terminated within 68 bytes",
        ),
        case(
            "empty device name",
            with_manifest(|m| m.entries[1].name.clear()),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 1,
                        fault: EntryFault::EmptyName
                    }
                )
            },
            "bad manifest entry 1: name is empty, a device name has 1 to 67 letters or digits",
        ),
        case(
            "name with a dash",
            with_manifest(|m| m.entries[2].name = b"my-net".to_vec()),
            |e| matches!(e, ImageError::Entry { index: 2, fault: EntryFault::BadName(n) } if n == "my-net"),
            "bad manifest entry 2: name \"my-net\" has a character that is not a letter or digit",
        ),
        case(
            "device type 7",
            with_manifest(|m| m.entries[1].kind = 7),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 1,
                        fault: EntryFault::Type { kind: 7, .. }
                    }
                )
            },
            "bad manifest entry 1: device \"storage\" has type 0x7, not a device type (BLOCK_BASIC=1, NET_BASIC=2)",
        ),
        case(
            "second reserved entry",
            with_manifest(|m| m.entries[2].kind = elf::RESERVED_FIRST),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 2,
                        fault: EntryFault::Type {
                            kind: 0x4000_0000,
                            ..
                        }
                    }
                )
            },
            "bad manifest entry 2: device \"service0\" has type 0x40000000",
        ),
        case(
            "attached set",
            with_manifest(|m| m.entries[2].runtime[elf::ATTACHED_IN_RUNTIME] = 1),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 2,
                        fault: EntryFault::Attached(1)
                    }
                )
            },
            "bad manifest entry 2: attached is 1, an image file has 0 there",
        ),
        case(
            "runtime bytes set",
            with_manifest(|m| m.entries[1].runtime[8] = 0xab),
            |e| {
                matches!(
                    e,
                    ImageError::Entry {
                        index: 1,
                        fault: EntryFault::RuntimeBytes {
                            offset: 80,
                            value: 0xab
                        }
                    }
                )
            },
            "bad manifest entry 1: byte 80 is 0xab, bytes 72..104 of an entry are zero in an image file",
        ),
        case(
            "gzip instead of zlib",
            gzip(&valid),
            |e| matches!(e, ImageError::Gzip),
            "gzip file: fulmar reads zlib-compressed images; gunzip it first",
        ),
        case(
            "corrupt zlib stream",
            b"\x78\x9c\xff\xff\xff\xff garbage".to_vec(),
            |e| matches!(e, ImageError::Zlib { .. }),
            "corrupt zlib stream at compressed byte",
        ),
        case(
            "truncated zlib stream",
            {
                let z = elf::zlib(&valid);
                z[..z.len() / 2].to_vec()
            },
            |e| matches!(e, ImageError::ZlibTruncated { .. }),
            "the zlib stream stops before its end",
        ),
        case(
            "data after the zlib stream",
            {
                let mut z = elf::zlib(&valid);
                z.extend_from_slice(b"junk");
                z
            },
            |e| matches!(e, ImageError::ZlibTrailing { .. }),
            "data follows the end of the zlib stream",
        ),
        case(
            "zlib of something else",
            elf::zlib(b"MZ\x90\x00 hello"),
            |e| matches!(e, ImageError::NotElf { .. }),
            "not an ELF file (magic is 4d 5a 90 00)",
        ),
        case(
            "zlib of nothing",
            elf::zlib(b""),
            |e| matches!(e, ImageError::Empty),
            "the image is empty",
        ),
    ];
    cases.push(Case {
        compression: Compression::Zlib,
        ..case(
            "--compressed on a plain image",
            valid.clone(),
            |e| matches!(e, ImageError::NotZlib { start } if start == "7f 45 4c 46"),
            "not zlib-compressed although --compressed says so (the file starts with 7f 45 4c 46): drop --compressed",
        )
    });
    cases
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn malformed_images_are_refused_naming_the_fault() {
    for case in malformed() {
        let err = image::from_bytes(case.bytes.clone(), case.compression)
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", case.name));
        assert!((case.check)(&err), "{}: wrong error {err:?}", case.name);
        let message = err.to_string();
        assert!(
            message.contains(case.says),
            "{}: message {message:?} lacks {:?}",
            case.name,
            case.says
        );
        assert!(!message.contains('\n'), "{}: {message:?}", case.name);
    }
}

#[test]
fn loading_a_file_gives_the_same_errors_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for case in malformed() {
        let path = dir.path().join("image");
        std::fs::write(&path, &case.bytes).unwrap();
        let from_file = image::load(&path, case.compression)
            .unwrap_err()
            .to_string();
        let from_bytes = image::from_bytes(case.bytes, case.compression)
            .unwrap_err()
            .to_string();
        assert_eq!(from_file, from_bytes, "{}", case.name);
    }
}

fn inspect(args: &[&str], file: &Path) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_fulmar"))
        .arg("inspect")
        .args(args)
        .arg(file)
        .arg("--dir")
        .arg(empty.path())
        // No tender anywhere: the report must not depend on the machine.
        .env("PATH", empty.path())
        .env_remove("FULMAR_LOG")
        .output()
        .unwrap()
}

#[test]
fn inspect_refuses_malformed_images_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for case in malformed() {
        let path = dir.path().join("image");
        std::fs::write(&path, &case.bytes).unwrap();
        let expected = image::from_bytes(case.bytes, case.compression).unwrap_err();
        let mut flags = vec![];
        if case.compression == Compression::Zlib {
            flags.push("--compressed");
        }
        for json in [false, true] {
            let mut args = flags.clone();
            if json {
                args.push("--json");
            }
            let out = inspect(&args, &path);
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert!(!out.status.success(), "{}: exit 0", case.name);
            assert!(
                out.stdout.is_empty(),
                "{}: stdout {:?}",
                case.name,
                out.stdout
            );
            assert_eq!(stderr, format!("fulmar: {expected}\n"), "{}", case.name);
            assert!(stderr.contains(case.says), "{}: {stderr}", case.name);
        }
    }
}

#[test]
fn inspect_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.hvt");
    let out = inspect(&["--json"], &path);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("fulmar: cannot read image {}: ", path.display())),
        "{stderr}"
    );
}

fn devices(list: &[(&str, DeviceKind)]) -> Vec<Device> {
    list.iter()
        .map(|(name, kind)| Device {
            name: name.to_string(),
            kind: *kind,
        })
        .collect()
}

/// Every field of a plain image read from memory and from a file.
fn assert_plain(bytes: &[u8], target: Target, abi: u32, expected: &[Device]) -> Image {
    let image = image::from_bytes(bytes.to_vec(), Compression::Detect).unwrap();
    assert_eq!(image.info.target, target);
    assert_eq!(image.info.abi_version, abi);
    assert_eq!(image.info.manifest_version, 1);
    assert_eq!(image.info.devices, expected);
    assert_eq!(image.info.sha256, sha256(bytes));
    assert!(!image.info.compressed);
    assert_eq!(image.info.size, bytes.len() as u64);
    assert_eq!(image.elf, bytes);
    let notes = image::parse_notes(bytes).unwrap();
    assert_eq!(
        (notes.target, notes.abi_version, notes.manifest_version),
        (target, abi, 1)
    );
    assert_eq!(notes.devices, expected);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image");
    std::fs::write(&path, bytes).unwrap();
    let loaded = image::load(&path, Compression::Detect).unwrap();
    assert_eq!(loaded.info, image.info);
    assert_eq!(loaded.elf, bytes);
    image
}

#[test]
fn image_without_devices() {
    let bytes = hvt(&[]).to_bytes();
    assert_plain(&bytes, Target::Hvt, 2, &[]);
}

#[test]
fn image_with_block_and_net() {
    let bytes = hvt(&[Entry::block("storage"), Entry::net("service0")]).to_bytes();
    let expected = devices(&[
        ("storage", DeviceKind::Block),
        ("service0", DeviceKind::Net),
    ]);
    assert_plain(&bytes, Target::Hvt, 2, &expected);
}

#[test]
fn image_with_63_devices_in_manifest_order() {
    let kind = |i: usize| {
        if i.is_multiple_of(3) {
            DeviceKind::Net
        } else {
            DeviceKind::Block
        }
    };
    let expected: Vec<Device> = (0..63)
        .map(|i| Device {
            name: format!("dev{i}"),
            kind: kind(i),
        })
        .collect();
    let entries: Vec<Entry> = expected
        .iter()
        .map(|d| match d.kind {
            DeviceKind::Net => Entry::net(&d.name),
            DeviceKind::Block => Entry::block(&d.name),
        })
        .collect();
    assert_plain(&hvt(&entries).to_bytes(), Target::Hvt, 2, &expected);
}

#[test]
fn longest_name_and_other_targets() {
    let long = "a1".repeat(33) + "Z";
    assert_eq!(long.len(), 67);
    let mut image = ElfImage::solo5(elf::SPT, 2, &[Entry::block(&long)]);
    image.machine = ElfImage::EM_AARCH64;
    assert_plain(
        &image.to_bytes(),
        Target::Spt,
        2,
        &devices(&[(&long, DeviceKind::Block)]),
    );
    for target in Target::ALL {
        let bytes = ElfImage::solo5(target.code(), 7, &[]).to_bytes();
        assert_plain(&bytes, target, 7, &[]);
    }
}

#[test]
fn notes_are_found_among_other_note_segments() {
    let mut image = hvt(&[Entry::net("service0")]);
    let build_id = Note::solo5(".note.gnu.build-id", 4, 3, vec![0xaa; 20]);
    image.notes.insert(
        0,
        Note {
            owner: b"GNU\0".to_vec(),
            ..build_id
        },
    );
    let stranger = Note::solo5(".note.solo5.other", 4, 0x5a5a_5a5a, vec![1; 8]);
    image.notes.insert(2, stranger);
    assert_plain(
        &image.to_bytes(),
        Target::Hvt,
        2,
        &devices(&[("service0", DeviceKind::Net)]),
    );
}

#[test]
fn compressed_images_are_detected_and_digested_uncompressed() {
    let plain = hvt(&[Entry::block("storage"), Entry::net("service0")]).to_bytes();
    let compressed = elf::zlib(&plain);
    assert_ne!(compressed, plain);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.z");
    std::fs::write(&path, &compressed).unwrap();
    for compression in [Compression::Detect, Compression::Zlib] {
        let from_bytes = image::from_bytes(compressed.clone(), compression).unwrap();
        let loaded = image::load(&path, compression).unwrap();
        for image in [from_bytes, loaded] {
            assert!(image.info.compressed);
            assert_eq!(image.info.sha256, sha256(&plain));
            assert_eq!(image.info.size, plain.len() as u64);
            assert_eq!(image.elf, plain);
            assert_eq!(image.info.target, Target::Hvt);
            assert_eq!(image.info.abi_version, 2);
            assert_eq!(image.info.manifest_version, 1);
            assert_eq!(
                image.info.devices,
                devices(&[
                    ("storage", DeviceKind::Block),
                    ("service0", DeviceKind::Net)
                ])
            );
        }
    }
}

#[test]
fn a_large_image_streams_through_chunk_boundaries() {
    let mut image = hvt(&[Entry::block("storage")]);
    // Not a multiple of any chunk size, and barely compressible.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    image.payload = (0..3_000_001)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let plain = image.to_bytes();
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, compressed) in [
        ("plain", plain.clone(), false),
        ("zlib", elf::zlib(&plain), true),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let loaded = image::load(&path, Compression::Detect).unwrap();
        assert_eq!(loaded.info.compressed, compressed);
        assert_eq!(loaded.info.sha256, sha256(&plain), "{name}");
        assert_eq!(loaded.elf, plain, "{name}");
    }
}

#[test]
fn size_limits_stop_large_images_and_zlib_bombs() {
    let mut image = hvt(&[]);
    image.payload = vec![0; 1 << 20];
    let plain = image.to_bytes();
    let bomb = elf::zlib(&plain);
    assert!(bomb.len() < 8192, "zeros compress well: {}", bomb.len());
    let limit = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, size) in [("plain", &plain, plain.len() as u64), ("bomb", &bomb, 0)] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let errors = [
            image::from_bytes_limited(bytes.clone(), Compression::Detect, limit).unwrap_err(),
            image::load_limited(&path, Compression::Detect, limit).unwrap_err(),
        ];
        for err in errors {
            match err {
                ImageError::TooLarge {
                    size: got,
                    limit: l,
                } => {
                    assert_eq!(l, limit, "{name}");
                    // A plain file is refused by its size; a bomb as soon as it
                    // passes the limit, long before its full size.
                    if size > 0 {
                        assert_eq!(got, size, "{name}");
                    } else {
                        assert!(got > limit && got < plain.len() as u64, "{name}: {got}");
                    }
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let fits =
            image::from_bytes_limited(bytes.clone(), Compression::Detect, plain.len() as u64);
        assert_eq!(fits.unwrap().elf, plain, "{name}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn inspect_json_reports_every_field() {
    let plain = hvt(&[Entry::block("storage"), Entry::net("service0")]).to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (write(dir.path(), "plain", &plain), false, &[][..]),
        (write(dir.path(), "zlib", &elf::zlib(&plain)), true, &[][..]),
        (
            write(dir.path(), "forced", &elf::zlib(&plain)),
            true,
            &["--compressed"][..],
        ),
    ];
    for (path, compressed, flags) in files {
        let mut args = flags.to_vec();
        args.push("--json");
        let out = inspect(&args, &path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let expected = format!(
            "{{\"target\":\"hvt\",\"abi_version\":2,\"manifest_version\":1,\
             \"devices\":[{{\"name\":\"storage\",\"type\":\"block\"}},\
             {{\"name\":\"service0\",\"type\":\"net\"}}],\
             \"sha256\":\"{}\",\"compressed\":{compressed},\"size\":{},\"tender\":{{",
            sha256(&plain),
            plain.len()
        );
        assert!(stdout.starts_with(&expected), "{stdout}\nwanted {expected}");
        assert!(
            stdout.ends_with("}}\n") && stdout.lines().count() == 1,
            "{stdout}"
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let error = report["tender"]["error"].as_str().unwrap();
        assert!(error.contains("solo5-hvt.2"), "{error}");
    }
}

#[test]
fn inspect_prints_a_readable_report() {
    let plain = hvt(&[Entry::block("storage"), Entry::net("service0")]).to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "image.hvt", &elf::zlib(&plain));
    let out = inspect(&[], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = [
        format!("image     {}", path.display()),
        format!(
            "format    zlib-compressed ELF, {} bytes uncompressed",
            plain.len()
        ),
        format!("sha256    {}", sha256(&plain)),
        "target    hvt, ABI version 2".to_string(),
        "manifest  version 1, 2 devices".to_string(),
        "  storage   block".to_string(),
        "  service0  net".to_string(),
    ];
    for (got, wanted) in stdout.lines().zip(&lines) {
        assert_eq!(got, wanted);
    }
    assert!(
        stdout
            .lines()
            .nth(lines.len())
            .unwrap()
            .starts_with("tender    none: ")
    );
}
