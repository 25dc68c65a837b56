//! Argument parsing and dispatch. Each subcommand is a thin client: the work is
//! done in `fulmar::host` (or, once it has landed, by the daemon).

mod inspect;

use clap::{Parser, Subcommand};
use fulmar::host::monitor;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "fulmar",
    version,
    about = "Terminal console and host supervisor for Solo5 unikernels"
)]
pub struct Args {
    /// The daemon's socket [default: RUNTIME_DIR/fulmar.sock]
    #[arg(long, global = true, env = "FULMAR_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The data directory: state, block devices, images, tenders
    /// [default: /var/lib/fulmar for root, the platform data directory otherwise]
    #[arg(long, global = true, env = "FULMAR_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The runtime directory: socket, console FIFOs, image copies
    /// [default: /run/fulmar for root, $XDG_RUNTIME_DIR/fulmar otherwise]
    #[arg(long, global = true, env = "FULMAR_RUNTIME_DIR", value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the host backend in the foreground (systemd or auto-start)
    Daemon,
    /// Bridge stdin/stdout to the local daemon, for `ssh HOST fulmar proxy`
    Proxy,
    /// Show an image's ABI, manifest, digest and tender; needs no daemon
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
        /// The image is zlib-compressed (detected otherwise)
        #[arg(long)]
        compressed: bool,
    },
    /// List unikernels
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create and start a unikernel
    Create(CreateArgs),
    /// Stop a unikernel (SIGTERM, then SIGKILL)
    Destroy { name: String },
    /// Stop and start a unikernel again
    Restart { name: String },
    /// Forget a stopped unikernel
    Remove { name: String },
    /// Show a unikernel's console
    Console {
        name: String,
        #[arg(long, short)]
        follow: bool,
        #[arg(long, conflicts_with = "since")]
        lines: Option<usize>,
        #[arg(long)]
        since: Option<String>,
    },
    /// Manage block devices
    #[command(subcommand)]
    Block(BlockCommand),
    /// Show the host policy and what is in use
    Policy {
        #[arg(long)]
        json: bool,
    },
    /// Show CPU, memory and network counters
    Stats {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Watch over one tender for the daemon (internal: the daemon starts it)
    #[command(hide = true)]
    Monitor {
        /// The run file: where the monitor records the run and its end
        #[arg(long, value_name = "FILE")]
        status: PathBuf,
        /// Between forwarding SIGTERM to the tender and SIGKILL
        #[arg(long, value_name = "MS")]
        grace_ms: u64,
        /// The console FIFO for the tender's stdout and stderr
        #[arg(long, value_name = "FIFO")]
        console: Option<PathBuf>,
        /// The tender's command line
        #[arg(last = true, required = true, value_name = "ARGV")]
        argv: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    pub image: PathBuf,
    /// Memory in MB
    #[arg(long)]
    pub mem: Option<u64>,
    /// CPU to pin the tender to
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Network interface: IF[:BRIDGE][@MAC] (IF alone means bridge IF)
    #[arg(long = "net", value_name = "IF[:BRIDGE][@MAC]")]
    pub nets: Vec<String>,
    /// Block device: DEV[:BLOCK][@SECTOR] (DEV alone means block device DEV)
    #[arg(long = "block", value_name = "DEV[:BLOCK][@SECTOR]")]
    pub blocks: Vec<String>,
    /// Restart when the unikernel fails, or only on these exit codes
    #[arg(long, value_name = "CODES", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub restart_on_fail: Option<String>,
    /// The image is zlib-compressed (detected otherwise)
    #[arg(long)]
    pub compressed: bool,
    /// Arguments for the unikernel
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// List block devices
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a block device, empty or from a file
    Create {
        name: String,
        size_mb: u64,
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Replace a block device's contents from a file or stdin (-)
    Upload {
        name: String,
        file: PathBuf,
        #[arg(long)]
        compressed: bool,
    },
    /// Copy a block device's contents to a file or stdout (-)
    Download { name: String, file: PathBuf },
    /// Delete a block device
    Destroy { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Inspect(#[from] inspect::InspectError),
    #[error("{0}")]
    Monitor(#[from] monitor::MonitorError),
    #[error("`{what}` has not landed yet: it arrives with {issue}")]
    NotYet {
        what: &'static str,
        issue: &'static str,
    },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Inspect(_) | CliError::Monitor(_) => 1,
            CliError::NotYet { .. } => 2,
        }
    }
}

pub fn run(args: Args) -> Result<(), CliError> {
    let not_yet = |what, issue| Err(CliError::NotYet { what, issue });
    match args.command {
        None => not_yet("the TUI", "issue 6"),
        Some(Command::Inspect {
            image,
            json,
            compressed,
        }) => Ok(inspect::run(&args.dir, &image, json, compressed)?),
        Some(Command::Monitor {
            status,
            grace_ms,
            console,
            argv,
        }) => Ok(monitor::run(&monitor::Options {
            status,
            grace: Duration::from_millis(grace_ms),
            console,
            argv,
        })?),
        Some(Command::Daemon) => not_yet("fulmar daemon", "issue 4"),
        Some(Command::Proxy) => not_yet("fulmar proxy", "issue 4"),
        Some(Command::List { .. }) => not_yet("fulmar list", "issue 4"),
        Some(Command::Create(_)) => not_yet("fulmar create", "issue 4"),
        Some(Command::Destroy { .. }) => not_yet("fulmar destroy", "issue 4"),
        Some(Command::Restart { .. }) => not_yet("fulmar restart", "issue 4"),
        Some(Command::Remove { .. }) => not_yet("fulmar remove", "issue 4"),
        Some(Command::Console { .. }) => not_yet("fulmar console", "issue 4"),
        Some(Command::Block(_)) => not_yet("fulmar block", "issue 5"),
        Some(Command::Policy { .. }) => not_yet("fulmar policy", "issue 4"),
        Some(Command::Stats { .. }) => not_yet("fulmar stats", "issue 4"),
    }
}
