//! fulmar-test-tender: a TEST DOUBLE for solo5-hvt / solo5-spt (TESTING.md).
//! It lands with issue 2; never install it under a tender's name.

fn main() -> std::process::ExitCode {
    eprintln!("fulmar-test-tender: not built yet");
    std::process::ExitCode::from(1)
}
