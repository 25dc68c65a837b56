//! Writes the seed corpus for the `image` target into fuzz/corpus/image/, made
//! by the test suite's ELF writer: valid images, compressed ones, and one of
//! each kind of damage, so the fuzzer starts deep inside the notes parser.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds

#[allow(dead_code)] // the seeds use only part of the writer
#[path = "../../tests/it/support/elf.rs"]
mod elf;

use elf::{ElfImage, Entry, Manifest};

/// Breaks one thing in a valid image.
type Damage = fn(&mut ElfImage);

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/image");
    std::fs::create_dir_all(&dir)?;
    let devices = [Entry::block("storage"), Entry::net("service0")];
    let many: Vec<Entry> = (0..63).map(|i| Entry::net(&format!("n{i}"))).collect();
    let small = |image: &mut ElfImage| image.payload.truncate(4);
    let mut seeds: Vec<(&str, ElfImage)> = vec![
        ("none", ElfImage::solo5(elf::HVT, 2, &[])),
        ("block-net", ElfImage::solo5(elf::SPT, 2, &devices)),
        ("63-devices", ElfImage::solo5(elf::HVT, 2, &many)),
    ];
    let damaged: [(&str, Damage); 5] = [
        ("target-99", |i| *i.abi() = elf::Note::abi(99, 2)),
        ("attached", |i| {
            let mut m = Manifest::new(&[Entry::block("disk")]);
            m.entries[1].runtime[elf::ATTACHED_IN_RUNTIME] = 1;
            i.set_manifest(&m);
        }),
        ("unterminated", |i| {
            let mut m = Manifest::new(&[Entry::block("disk")]);
            m.entries[1].name = vec![b'x'; 68];
            i.set_manifest(&m);
        }),
        ("version-2", |i| {
            let mut m = Manifest::new(&[]);
            m.version = 2;
            i.set_manifest(&m);
        }),
        ("abi-in-section-only", |i| i.abi().in_segment = false),
    ];
    for (name, damage) in damaged {
        let mut image = ElfImage::solo5(elf::HVT, 2, &devices);
        damage(&mut image);
        seeds.push((name, image));
    }
    for (name, mut image) in seeds {
        small(&mut image);
        let bytes = image.to_bytes();
        std::fs::write(dir.join(format!("{name}.elf")), &bytes)?;
        std::fs::write(dir.join(format!("{name}.elf.z")), elf::zlib(&bytes))?;
    }
    println!("seeds written to {}", dir.display());
    Ok(())
}
