//! The monitor's system call filter: once its tender runs (and so cannot
//! inherit it), the monitor, which stays root for the whole life of a
//! unikernel, keeps only the calls it still makes: wait for signals and reap
//! the tender, signal the tender and its group and nothing else, rewrite the
//! run file atomically, point its standard streams at `/dev/null`, and exit.
//! The list was taken from `strace -f` of monitors started, stopped, and
//! killing a tender deaf to SIGTERM, plus what std may need to allocate.
//!
//! Anything else fails with `EPERM` rather than killing the monitor: a dead
//! monitor would leave its tender running unsupervised, with no one to record
//! its end, while a refused call is an error it reports or outlives.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::io;

/// Calls allowed whatever their arguments.
const ALWAYS: &[libc::c_long] = &[
    // Signals and the tender's end.
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_wait4,
    // The run file: durable::replace, through the run directory's descriptor.
    libc::SYS_openat,
    libc::SYS_write,
    libc::SYS_fsync,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_flock,
    // Standard streams to /dev/null.
    libc::SYS_dup3,
    // Memory, time and the way out.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What x86_64 has beside the `at` forms, which libc uses there.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[libc::c_long] = &[libc::SYS_rename, libc::SYS_dup2];
#[cfg(target_arch = "aarch64")]
const LEGACY: &[libc::c_long] = &[];

/// Confines this process to what the monitor needs, the tender `tender` being
/// the only process it may signal (alone, or its process group).
pub fn confine(tender: u32) -> io::Result<()> {
    let program = program(tender)?;
    seccompiler::apply_filter(&program).map_err(io::Error::other)
}

fn program(tender: u32) -> io::Result<BpfProgram> {
    let invalid = |e: seccompiler::BackendError| io::Error::other(e);
    let pid = i32::try_from(tender).map_err(io::Error::other)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALWAYS
        .iter()
        .chain(LEGACY)
        .map(|&call| (call, Vec::new()))
        .collect();
    let target = |pid: i32| {
        // kill's pid is an int: only its low 32 bits are meaningful.
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            pid as u32 as u64,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
    };
    rules.insert(
        libc::SYS_kill,
        vec![
            target(pid).map_err(invalid)?,
            target(-pid).map_err(invalid)?,
        ],
    );
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(io::Error::other)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(invalid)?;
    BpfProgram::try_from(filter).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    /// What `kill(pid, 0)` returns in a child confined for `tender`: 0 or the errno.
    fn probe(tender: u32, pids: &[i32]) -> Vec<i32> {
        let program = program(tender).unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        // SAFETY: the child makes only raw system calls (seccomp, kill, write,
        // _exit) on memory prepared before the fork, and allocates nothing.
        match unsafe { libc::fork() } {
            0 => {
                let code = match seccompiler::apply_filter(&program) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                for &pid in pids {
                    // SAFETY: kill takes no pointers; errno is this thread's.
                    let got = match unsafe { libc::kill(pid, 0) } {
                        0 => 0,
                        _ => io::Error::last_os_error().raw_os_error().unwrap_or(-1),
                    };
                    let bytes = got.to_ne_bytes();
                    // SAFETY: four bytes from a live local array.
                    unsafe { libc::write(write.as_raw_fd(), bytes.as_ptr().cast(), 4) };
                }
                // SAFETY: ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            child => {
                drop(write);
                let mut status = 0;
                // SAFETY: waits for our own child; status outlives the call.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                assert_eq!(status, 0, "the child could not apply the filter");
                let mut out = Vec::new();
                io::Read::read_to_end(&mut File::from(read), &mut out).unwrap();
                out.chunks(4)
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    }

    #[test]
    fn a_confined_monitor_signals_its_tender_and_its_group_only() {
        let mut tender = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut bystander = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = tender.id() as i32;
        let got = probe(tender.id(), &[pid, -pid, bystander.id() as i32, 1]);
        assert_eq!(got, [0, 0, libc::EPERM, libc::EPERM]);
        for child in [&mut tender, &mut bystander] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
