//! gcc-built Solo5 images: their notes sit where Solo5's headers put them, and fulmar (the
//! library and `fulmar inspect`) reads every field of them, and finds their tender.

use crate::support;

use fulmar::api::image::{DeviceKind, ImageInfo, Target};
use fulmar::host::image::{self, Compression, Notes};
use fulmar::host::tender::TenderError;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use support::images::{self, Fixture, Spec};
use support::tender::{self as test_tender, Tenders};

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The bytes of section `name`, and checks that one PT_NOTE covers exactly it.
fn note_section<'a>(elf: &goblin::elf::Elf, file: &'a [u8], name: &str) -> &'a [u8] {
    let sh = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))
        .unwrap_or_else(|| panic!("no section {name}"));
    assert_eq!(sh.sh_type, goblin::elf::section_header::SHT_NOTE, "{name}");
    let notes: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == goblin::elf::program_header::PT_NOTE)
        .filter(|ph| ph.p_offset == sh.sh_offset && ph.p_filesz == sh.sh_size)
        .collect();
    assert_eq!(notes.len(), 1, "{name} should have a PT_NOTE of its own");
    &file[sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize]
}

/// Reads the gcc-built notes byte by byte, without fulmar's parser, against the
/// offsets Solo5's headers give: proof that the fixtures are what the real toolchain makes.
#[test]
fn gcc_images_lay_out_the_notes_as_solo5_does() {
    for Fixture { name, spec } in images::fixtures() {
        let file = spec.bytes();
        let elf = goblin::elf::Elf::parse(&file).unwrap();
        assert!(elf.is_64 && elf.little_endian, "{name}");
        assert_eq!(elf.header.e_type, goblin::elf::header::ET_EXEC, "{name}");
        let pt_notes = elf
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == goblin::elf::program_header::PT_NOTE)
            .count();
        assert_eq!(pt_notes, 2, "{name}");

        let abi = note_section(&elf, &file, ".note.solo5.abi");
        assert_eq!(abi.len(), 20 + 16, "{name}");
        assert_eq!(u32_at(abi, 0), 6);
        assert_eq!(u32_at(abi, 4), 16);
        assert_eq!(u32_at(abi, 8), 0x3149_4241);
        assert_eq!(&abi[12..20], b"Solo5\0\0\0");
        assert_eq!(u32_at(abi, 20), spec.target.code());
        assert_eq!(u32_at(abi, 24), spec.abi_version);
        assert_eq!(&abi[28..36], &[0; 8]);

        let mft = note_section(&elf, &file, ".note.solo5.manifest");
        let entries = spec.devices.len() + 1;
        assert_eq!(mft.len(), 20 + 12 + 104 * entries, "{name}");
        assert_eq!(u32_at(mft, 0), 6);
        assert_eq!(u32_at(mft, 4) as usize, 12 + 104 * entries);
        assert_eq!(u32_at(mft, 8), 0x3154_464d);
        assert_eq!(&mft[12..20], b"Solo5\0\0\0");
        assert_eq!(
            &mft[20..24],
            &[0; 4],
            "padding before the 8-aligned manifest"
        );
        assert_eq!(u32_at(mft, 24), 1, "manifest version");
        assert_eq!(u32_at(mft, 28) as usize, entries);
        let entry = |i: usize| &mft[32 + 104 * i..32 + 104 * (i + 1)];
        assert_eq!(entry(0)[..68], [0; 68]);
        assert_eq!(u32_at(entry(0), 68), 0x4000_0000);
        for (i, dev) in spec.devices.iter().enumerate() {
            let e = entry(i + 1);
            let nul = e.iter().position(|&b| b == 0).unwrap();
            assert!(nul < 68);
            assert_eq!(&e[..nul], dev.name.as_bytes(), "{name} entry {}", i + 1);
            assert!(e[nul..68].iter().all(|&b| b == 0));
            assert_eq!(u32_at(e, 68), images::kind_code(dev.kind));
        }
        for i in 0..entries {
            assert_eq!(
                entry(i)[72..104],
                [0; 32],
                "{name} entry {i}: run-time bytes"
            );
        }
    }
}

#[test]
fn the_fixtures_cover_every_shape() {
    let specs: Vec<Spec> = images::fixtures().into_iter().map(|f| f.spec).collect();
    let has = |pred: &dyn Fn(&Spec) -> bool| specs.iter().any(pred);
    assert!(has(&|s| s.devices.is_empty()));
    assert!(has(&|s| s.devices.len() == images::MAX_DEVICES));
    assert!(has(&|s| s
        .devices
        .iter()
        .any(|d| d.name.len() == images::MAX_NAME)));
    for target in [Target::Hvt, Target::Spt] {
        assert!(has(&|s| s.target == target));
    }
    for kind in [DeviceKind::Block, DeviceKind::Net] {
        assert!(has(&|s| s.devices.len() == 1 && s.devices[0].kind == kind));
    }
}

fn expected_info(spec: &Spec, compressed: bool) -> ImageInfo {
    let elf = spec.bytes();
    ImageInfo {
        target: spec.target,
        abi_version: spec.abi_version,
        manifest_version: 1,
        devices: spec.devices.clone(),
        sha256: images::sha256_hex(&elf),
        compressed,
        size: elf.len() as u64,
    }
}

#[test]
fn the_library_reads_every_fixture() {
    for Fixture { name, spec } in images::fixtures() {
        let elf = spec.bytes();
        let notes = image::parse_notes(&elf).unwrap();
        assert_eq!(
            notes,
            Notes {
                target: spec.target,
                abi_version: spec.abi_version,
                manifest_version: 1,
                devices: spec.devices.clone(),
            },
            "{name}"
        );
        for (path, compressed) in [(spec.path(), false), (spec.zlib_path(), true)] {
            for how in [Compression::Detect, Compression::Zlib] {
                let loaded = image::load(&path, how);
                if how == Compression::Zlib && !compressed {
                    assert!(loaded.is_err(), "{name}: --compressed on a plain ELF");
                    continue;
                }
                let loaded = loaded.unwrap();
                assert_eq!(loaded.info, expected_info(&spec, compressed), "{name}");
                assert_eq!(loaded.elf, elf, "{name}");
            }
            let raw = std::fs::read(&path).unwrap();
            let from_bytes = image::from_bytes(raw, Compression::Detect).unwrap();
            assert_eq!(from_bytes.info, expected_info(&spec, compressed), "{name}");
        }
    }
}

/// `fulmar inspect ARGS` with only `path_dirs` on PATH and `data_dir` as FULMAR_DIR.
fn inspect(args: &[&str], image: &Path, data_dir: &Path, path_var: &std::ffi::OsStr) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fulmar"))
        .arg("inspect")
        .args(args)
        .arg(image)
        .env("PATH", path_var)
        .env("FULMAR_DIR", data_dir)
        .env_remove("FULMAR_TEST_TENDER_ABI")
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn expected_json(spec: &Spec, compressed: bool, tender: Value) -> Value {
    let elf = spec.bytes();
    let devices: Vec<Value> = spec
        .devices
        .iter()
        .map(|d| json!({"name": d.name, "type": d.kind.to_string()}))
        .collect();
    json!({
        "target": spec.target.as_str(),
        "abi_version": spec.abi_version,
        "manifest_version": 1,
        "devices": devices,
        "sha256": images::sha256_hex(&elf),
        "compressed": compressed,
        "size": elf.len(),
        "tender": tender,
    })
}

#[test]
fn inspect_json_reports_every_field_and_the_tender() {
    let tenders = Tenders::install(&["solo5-hvt", "solo5-spt"]);
    let data = tempfile::tempdir().unwrap();
    for Fixture { name, spec } in images::fixtures() {
        let tender = tenders.tender(&format!("solo5-{}", spec.target));
        let tender = json!({"path": tender.to_str().unwrap(), "abi_version": 2});
        for (path, compressed) in [(spec.path(), false), (spec.zlib_path(), true)] {
            let out = inspect(&["--json"], &path, data.path(), &tenders.path_var());
            assert_eq!(
                json_of(&out),
                expected_json(&spec, compressed, tender.clone()),
                "{name}"
            );
        }
    }
}

/// The value of the line that starts with `label` in `inspect`'s human output.
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label).filter(|v| v.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {label} line in:\n{out}"))
        .trim()
}

#[test]
fn inspect_prints_every_field_for_people() {
    let tenders = Tenders::install(&["solo5-hvt", "solo5-spt"]);
    let data = tempfile::tempdir().unwrap();
    for Fixture { name, spec } in images::fixtures() {
        for (path, compressed) in [(spec.path(), false), (spec.zlib_path(), true)] {
            let out = inspect(&[], &path, data.path(), &tenders.path_var());
            assert!(out.status.success(), "{name}");
            let out = String::from_utf8(out.stdout).unwrap();
            let elf = spec.bytes();
            assert_eq!(field(&out, "image"), path.to_str().unwrap());
            let format = field(&out, "format");
            assert!(format.contains(&format!("{} bytes", elf.len())), "{format}");
            assert_eq!(format.contains("zlib"), compressed, "{format}");
            assert_eq!(field(&out, "sha256"), images::sha256_hex(&elf));
            let target = field(&out, "target");
            assert!(target.starts_with(spec.target.as_str()), "{target}");
            assert!(target.contains(&format!("ABI version {}", spec.abi_version)));
            let manifest = field(&out, "manifest");
            assert!(manifest.contains("version 1"), "{manifest}");
            assert!(manifest.contains(&format!("{} device", spec.devices.len())));
            let devices: Vec<(String, String)> = out
                .lines()
                .filter(|l| l.starts_with("  "))
                .map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    assert_eq!(words.len(), 2, "{l:?}");
                    (words[0].to_owned(), words[1].to_owned())
                })
                .collect();
            let expected: Vec<(String, String)> = spec
                .devices
                .iter()
                .map(|d| (d.name.clone(), d.kind.to_string()))
                .collect();
            assert_eq!(devices, expected, "{name}");
            let tender = tenders.tender(&format!("solo5-{}", spec.target));
            assert!(field(&out, "tender").starts_with(tender.to_str().unwrap()));
        }
    }
}

fn tender_of(
    image: &Path,
    data_dir: &Path,
    path_var: &std::ffi::OsStr,
    abi: Option<&str>,
) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulmar"));
    cmd.args(["inspect", "--json"])
        .arg(image)
        .env("PATH", path_var)
        .env("FULMAR_DIR", data_dir)
        .env_remove("FULMAR_TEST_TENDER_ABI");
    if let Some(abi) = abi {
        cmd.env("FULMAR_TEST_TENDER_ABI", abi);
    }
    json_of(&cmd.output().unwrap())["tender"].clone()
}

#[test]
fn inspect_without_a_tender_says_where_it_looked() {
    let empty_path = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let image = images::no_devices(Target::Hvt).path();
    let tender = tender_of(&image, data.path(), empty_path.path().as_os_str(), None);
    let expected = TenderError::NotFound {
        target: Target::Hvt,
        abi: 2,
        looked: vec![data.path().to_owned(), empty_path.path().to_owned()],
    };
    assert_eq!(tender, json!({"error": expected.to_string()}));
    let error = tender["error"].as_str().unwrap();
    for needle in [
        "solo5-hvt.2",
        data.path().to_str().unwrap(),
        empty_path.path().to_str().unwrap(),
    ] {
        assert!(error.contains(needle), "{error:?} should mention {needle}");
    }
}

#[test]
fn inspect_reports_a_tender_of_another_abi() {
    let tenders = Tenders::install(&["solo5-spt"]);
    let data = tempfile::tempdir().unwrap();
    let image = images::one_block(Target::Spt).path();
    let tender = tender_of(&image, data.path(), tenders.dir().as_os_str(), Some("3"));
    let expected = TenderError::AbiMismatch {
        path: tenders.tender("solo5-spt"),
        target: Target::Spt,
        found: 3,
        wanted: 2,
    };
    assert_eq!(tender, json!({"error": expected.to_string()}));
    assert!(expected.to_string().contains("ABI version 3"));
}

#[test]
fn inspect_prefers_the_versioned_name_and_the_data_dir() {
    let image = images::no_devices(Target::Hvt).path();
    let found = |path: &Path| json!({"path": path.to_str().unwrap(), "abi_version": 2});

    let both = Tenders::install(&["solo5-hvt", "solo5-hvt.2"]);
    let data = tempfile::tempdir().unwrap();
    let tender = tender_of(&image, data.path(), both.dir().as_os_str(), None);
    assert_eq!(tender, found(&both.tender("solo5-hvt.2")));

    let in_data = tempfile::tempdir().unwrap();
    test_tender::install_into(in_data.path(), &["solo5-hvt"]);
    let tender = tender_of(&image, in_data.path(), both.dir().as_os_str(), None);
    assert_eq!(tender, found(&in_data.path().join("solo5-hvt")));

    // A tender of the wrong target is no tender for the image.
    let spt_only = Tenders::install(&["solo5-spt", "solo5-spt.2"]);
    let tender = tender_of(&image, data.path(), spt_only.dir().as_os_str(), None);
    assert!(
        tender["error"]
            .as_str()
            .unwrap()
            .contains("no tender for hvt")
    );
}

#[test]
fn inspect_of_a_missing_file_fails_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.hvt");
    let out = inspect(&["--json"], &missing, dir.path(), dir.path().as_os_str());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("fulmar: ") && err.contains("missing.hvt"),
        "{err}"
    );
}
