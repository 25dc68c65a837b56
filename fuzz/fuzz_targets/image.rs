//! Arbitrary bytes into the image reader: it must return an error or an image,
//! never panic, hang or allocate far beyond its input.

#![no_main]

use fulmar::host::image::{self, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let notes = image::parse_notes(data);
    if let Ok(image) = image::from_bytes(data.to_vec(), Compression::Detect) {
        // What a clean read reports must be what the ELF it returns says.
        assert_eq!(image.info.size, image.elf.len() as u64);
        let again = image::parse_notes(&image.elf).expect("a read image parses again");
        assert_eq!(again.devices, image.info.devices);
        if !image.info.compressed {
            assert_eq!(notes.ok(), Some(again));
        }
    }
});
