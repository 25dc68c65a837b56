//! A small ELF64 writer for Solo5 test images, including the malformed ones a
//! compiler cannot produce.
//!
//! [`ElfImage::solo5`] builds a valid image: an ELF header, a `PT_LOAD` segment
//! holding `payload` (section `.text`), and each note in its own `PT_NOTE`
//! segment and named section (`.note.solo5.abi` aligned to 4,
//! `.note.solo5.manifest` aligned to 8), laid out byte for byte as the Solo5
//! toolchain writes them. Every field is public: change one to get the malformed case, then call
//! [`ElfImage::to_bytes`]. Byte-level damage (truncation) is done on the result.
//!
//! `class` and `data` change only `e_ident` (and, for `data`, the byte order of
//! the ELF structures); the layout stays ELF64, since a reader must stop at the
//! identification bytes anyway.

use std::io::Write;

pub const NT_ABI: u32 = 0x3149_4241;
pub const NT_MANIFEST: u32 = 0x3154_464d;
pub const BLOCK_BASIC: u32 = 1;
pub const NET_BASIC: u32 = 2;
pub const RESERVED_FIRST: u32 = 0x4000_0000;
pub const HVT: u32 = 1;
pub const SPT: u32 = 2;
pub const OWNER: &[u8] = b"Solo5\0";
/// Where an entry's `attached` byte is within its tender-owned tail (72..104).
pub const ATTACHED_IN_RUNTIME: usize = 96 - 72;

const EHDR: usize = 64;
const PHDR: usize = 56;
const SHDR: usize = 64;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_PROGBITS: u32 = 1;
const SHT_STRTAB: u32 = 3;
const SHT_NOTE: u32 = 7;
const LOAD_ADDR: u64 = 0x10_0000;

/// One 104-byte manifest entry as the file stores it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Written at the start of the 68-byte name field, the rest zero; 68 bytes
    /// or more leave no NUL.
    pub name: Vec<u8>,
    pub kind: u32,
    /// Bytes 72..104, which the tender owns and a file leaves zero.
    pub runtime: [u8; 32],
}

impl Entry {
    pub fn new(name: &str, kind: u32) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind,
            runtime: [0; 32],
        }
    }

    pub fn reserved() -> Entry {
        Entry::new("", RESERVED_FIRST)
    }

    pub fn block(name: &str) -> Entry {
        Entry::new(name, BLOCK_BASIC)
    }

    pub fn net(name: &str) -> Entry {
        Entry::new(name, NET_BASIC)
    }

    fn bytes(&self) -> [u8; 104] {
        let mut out = [0; 104];
        let name = &self.name[..self.name.len().min(68)];
        out[..name.len()].copy_from_slice(name);
        out[68..72].copy_from_slice(&self.kind.to_le_bytes());
        out[72..].copy_from_slice(&self.runtime);
        out
    }
}

/// The manifest note's descriptor.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub version: u32,
    /// Including entry 0.
    pub entries: Vec<Entry>,
    /// Overrides the stored entry count (which is `entries.len()` otherwise).
    pub count: Option<u32>,
}

impl Manifest {
    /// Version 1, the reserved entry 0, then `devices`.
    pub fn new(devices: &[Entry]) -> Manifest {
        let mut entries = vec![Entry::reserved()];
        entries.extend_from_slice(devices);
        Manifest {
            version: 1,
            entries,
            count: None,
        }
    }

    /// 4 padding bytes, version, count, entries: 12 + 104 * entries bytes.
    pub fn desc(&self) -> Vec<u8> {
        let count = self.count.unwrap_or(self.entries.len() as u32);
        let mut out = vec![0; 4];
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.bytes());
        }
        out
    }
}

/// The ABI note's descriptor: target, version, 8 reserved bytes.
pub fn abi_desc(target: u32, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&target.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// A note and where it goes.
#[derive(Clone, Debug)]
pub struct Note {
    pub section: String,
    /// Section and segment alignment (4 for the ABI note, 8 for the manifest).
    pub align: u64,
    /// The owner name including its NUL; `namesz` is its length.
    pub owner: Vec<u8>,
    pub n_type: u32,
    pub desc: Vec<u8>,
    /// Overrides the stored `descsz` (which is `desc.len()` otherwise).
    pub descsz: Option<u32>,
    /// Whether a `PT_NOTE` program header covers the note (the section always exists).
    pub in_segment: bool,
    /// Overrides the segment's `p_filesz` (which is the note's length otherwise).
    pub segment_size: Option<u64>,
}

impl Note {
    pub fn abi(target: u32, version: u32) -> Note {
        Note::solo5(".note.solo5.abi", 4, NT_ABI, abi_desc(target, version))
    }

    pub fn manifest(manifest: &Manifest) -> Note {
        Note::solo5(".note.solo5.manifest", 8, NT_MANIFEST, manifest.desc())
    }

    pub fn solo5(section: &str, align: u64, n_type: u32, desc: Vec<u8>) -> Note {
        Note {
            section: section.into(),
            align,
            owner: OWNER.to_vec(),
            n_type,
            desc,
            descsz: None,
            in_segment: true,
            segment_size: None,
        }
    }

    /// Header, owner padded to 4, descriptor padded to 4.
    fn bytes(&self, order: Order) -> Vec<u8> {
        let mut out = Vec::new();
        order.u32(&mut out, self.owner.len() as u32);
        order.u32(&mut out, self.descsz.unwrap_or(self.desc.len() as u32));
        order.u32(&mut out, self.n_type);
        out.extend_from_slice(&self.owner);
        pad(&mut out, 4);
        out.extend_from_slice(&self.desc);
        pad(&mut out, 4);
        out
    }
}

/// A whole image, as fields to tweak before writing it.
#[derive(Clone, Debug)]
pub struct ElfImage {
    /// `e_ident[EI_CLASS]`: 2 is 64-bit.
    pub class: u8,
    /// `e_ident[EI_DATA]`: 1 is little-endian, 2 big-endian.
    pub data: u8,
    pub e_type: u16,
    pub machine: u16,
    pub phentsize: u16,
    /// In this order, after the `PT_LOAD` program header.
    pub notes: Vec<Note>,
    pub payload: Vec<u8>,
}

impl ElfImage {
    pub const EM_X86_64: u16 = 62;
    pub const EM_AARCH64: u16 = 183;

    /// A valid x86-64 image for `target` with manifest entries `devices` (after entry 0).
    pub fn solo5(target: u32, abi_version: u32, devices: &[Entry]) -> ElfImage {
        ElfImage {
            class: 2,
            data: 1,
            e_type: 2,
            machine: Self::EM_X86_64,
            phentsize: PHDR as u16,
            notes: vec![
                Note::abi(target, abi_version),
                Note::manifest(&Manifest::new(devices)),
            ],
            payload: b"\xf4 a Solo5 unikernel would be here".to_vec(),
        }
    }

    /// The ABI note of an image made by [`ElfImage::solo5`].
    pub fn abi(&mut self) -> &mut Note {
        &mut self.notes[0]
    }

    /// The manifest note of an image made by [`ElfImage::solo5`].
    pub fn manifest(&mut self) -> &mut Note {
        &mut self.notes[1]
    }

    /// Replaces the manifest note's descriptor.
    pub fn set_manifest(&mut self, manifest: &Manifest) {
        self.manifest().desc = manifest.desc();
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let order = Order(self.data == 2);
        let segments = 1 + self.notes.iter().filter(|n| n.in_segment).count();
        let mut body = Vec::new();
        let mut sections = vec![Section::default()];
        let mut phdrs = Vec::new();
        let mut strtab = vec![0u8];
        let base = (EHDR + PHDR * segments) as u64;
        let place = |body: &mut Vec<u8>, align: usize, bytes: &[u8]| {
            while !(base as usize + body.len()).is_multiple_of(align) {
                body.push(0);
            }
            let offset = base + body.len() as u64;
            body.extend_from_slice(bytes);
            offset
        };

        let text = place(&mut body, 16, &self.payload);
        let size = self.payload.len() as u64;
        phdrs.push(Phdr {
            kind: PT_LOAD,
            flags: 5,
            offset: text,
            addr: LOAD_ADDR + text,
            size,
            align: 16,
        });
        sections.push(Section::new(
            &mut strtab,
            ".text",
            SHT_PROGBITS,
            6,
            text,
            size,
            16,
        ));
        for note in &self.notes {
            let bytes = note.bytes(order);
            let offset = place(&mut body, note.align as usize, &bytes);
            let size = bytes.len() as u64;
            if note.in_segment {
                phdrs.push(Phdr {
                    kind: PT_NOTE,
                    flags: 4,
                    offset,
                    addr: LOAD_ADDR + offset,
                    size: note.segment_size.unwrap_or(size),
                    align: note.align,
                });
            }
            sections.push(Section::new(
                &mut strtab,
                &note.section,
                SHT_NOTE,
                2,
                offset,
                size,
                note.align,
            ));
        }
        let strtab_index = sections.len();
        let names = Section::new(&mut strtab, ".shstrtab", SHT_STRTAB, 0, 0, 0, 1);
        sections.push(Section {
            offset: place(&mut body, 1, &strtab),
            size: strtab.len() as u64,
            ..names
        });
        let shoff = place(&mut body, 8, &[]);

        let mut out = Vec::with_capacity(shoff as usize + SHDR * sections.len());
        self.header(
            &mut out,
            order,
            segments,
            shoff,
            sections.len(),
            strtab_index,
        );
        for phdr in &phdrs {
            phdr.write(&mut out, order);
        }
        out.extend_from_slice(&body);
        for section in &sections {
            section.write(&mut out, order);
        }
        out
    }

    fn header(
        &self,
        out: &mut Vec<u8>,
        order: Order,
        phnum: usize,
        shoff: u64,
        shnum: usize,
        shstrndx: usize,
    ) {
        out.extend_from_slice(b"\x7fELF");
        out.extend_from_slice(&[self.class, self.data, 1, 0]);
        out.extend_from_slice(&[0; 8]);
        order.u16(out, self.e_type);
        order.u16(out, self.machine);
        order.u32(out, 1);
        order.u64(out, LOAD_ADDR + EHDR as u64); // entry: irrelevant here
        order.u64(out, EHDR as u64);
        order.u64(out, shoff);
        order.u32(out, 0);
        order.u16(out, EHDR as u16);
        order.u16(out, self.phentsize);
        order.u16(out, phnum as u16);
        order.u16(out, SHDR as u16);
        order.u16(out, shnum as u16);
        order.u16(out, shstrndx as u16);
    }
}

/// zlib-compresses an image, as images are shipped for `--compressed`.
pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn pad(out: &mut Vec<u8>, align: usize) {
    while !out.len().is_multiple_of(align) {
        out.push(0);
    }
}

/// Byte order of the ELF structures: big-endian when true.
#[derive(Clone, Copy)]
struct Order(bool);

impl Order {
    fn u16(self, out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&if self.0 {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn u32(self, out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&if self.0 {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn u64(self, out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&if self.0 {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
}

struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    addr: u64,
    size: u64,
    align: u64,
}

impl Phdr {
    fn write(&self, out: &mut Vec<u8>, order: Order) {
        order.u32(out, self.kind);
        order.u32(out, self.flags);
        order.u64(out, self.offset);
        order.u64(out, self.addr);
        order.u64(out, self.addr);
        order.u64(out, self.size);
        order.u64(out, self.size);
        order.u64(out, self.align);
    }
}

#[derive(Default)]
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    align: u64,
}

impl Section {
    /// A section named `name`, whose name is appended to `strtab`.
    fn new(
        strtab: &mut Vec<u8>,
        name: &str,
        kind: u32,
        flags: u64,
        offset: u64,
        size: u64,
        align: u64,
    ) -> Section {
        let at = strtab.len() as u32;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        Section {
            name: at,
            kind,
            flags,
            offset,
            size,
            align,
        }
    }

    fn write(&self, out: &mut Vec<u8>, order: Order) {
        order.u32(out, self.name);
        order.u32(out, self.kind);
        order.u64(out, self.flags);
        order.u64(
            out,
            if self.flags & 2 != 0 {
                LOAD_ADDR + self.offset
            } else {
                0
            },
        );
        order.u64(out, self.offset);
        order.u64(out, self.size);
        order.u32(out, 0);
        order.u32(out, 0);
        order.u64(out, self.align);
        order.u64(out, 0);
    }
}
