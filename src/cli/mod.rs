//! Argument parsing and dispatch. Each subcommand is a thin client: the work is
//! done by the daemon (or, for `inspect`, by `fulmar::host` directly).

mod blocks;
mod connect;
mod create;
mod inspect;
mod remote;
mod show;
mod tui;

use clap::{Parser, Subcommand};
use fulmar::api::protocol::Request;
use fulmar::api::unikernel::RestartPolicy;
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
    /// Do not start a daemon in the background when none is running
    #[arg(long, global = true)]
    pub no_start: bool,
    /// TUI: offer no action that changes the host (destroy, restart, create, ...)
    #[arg(long)]
    pub read_only: bool,
    /// TUI: the colour theme (overrides the config file)
    #[arg(long, value_enum, value_name = "THEME")]
    pub theme: Option<fulmar::ui::theme::ThemeName>,
    /// TUI: the config file [default: the platform config directory's fulmar/config.toml]
    #[arg(long, env = "FULMAR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the daemon lets its clients make it hold.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitFlags {
    /// The largest image the daemon takes, in MiB uncompressed; an upload is
    /// refused as soon as it passes this
    #[arg(long, value_name = "MIB", default_value_t = fulmar::host::image::MAX_IMAGE_SIZE >> 20)]
    max_image_mb: u64,
    /// Images the daemon receives at once, from all clients; one more is
    /// refused until one is stored
    #[arg(long, value_name = "N", default_value_t = 2)]
    image_uploads: usize,
    /// Connections the daemon holds open at once, of all users; root may
    /// open a few more, so it can always get in
    #[arg(long, value_name = "N", default_value_t = 512)]
    max_connections: usize,
    /// Connections any one user (root too) may hold open at once
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections_per_user: usize,
    /// Seconds a client may take to say Hello, and a frame it began may go
    /// without its next byte, before the daemon hangs up
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    client_timeout: u64,
}

impl LimitFlags {
    fn limits(&self) -> fulmar::host::daemon::Limits {
        fulmar::host::daemon::Limits {
            max_image: self.max_image_mb.saturating_mul(1 << 20),
            image_uploads: self.image_uploads,
            connections: fulmar::host::daemon::gate::Caps {
                total: self.max_connections,
                per_user: self.max_connections_per_user,
            },
            client_timeout: std::time::Duration::from_secs(self.client_timeout),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the host backend in the foreground (systemd or auto-start)
    Daemon {
        /// Members of this group may use fulmar (the socket is 0660, owned by it)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Stop every unikernel when the daemon stops (default: leave them
        /// running for the next daemon to re-adopt, e.g. across upgrades)
        #[arg(long)]
        stop_on_exit: bool,
        /// Run each tender as USER: its uid, gid and groups, no capabilities
        /// [default for root: fulmar-tender; `root` keeps tenders as root;
        /// a daemon that is not root runs them as itself]
        #[arg(long, env = "FULMAR_TENDER_USER", value_name = "USER")]
        tender_user: Option<String>,
        /// Detach from the terminal's session (how clients start a daemon)
        #[arg(long, hide = true)]
        background: bool,
        #[command(flatten)]
        limits: LimitFlags,
    },
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
    /// Show one unikernel: its state, restart policy, restarts and exits
    Info {
        name: String,
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
        /// Only lines from the last DURATION (90s, 10m, 2h, 1d)
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Pass control and escape bytes through even on a terminal
        #[arg(long)]
        raw: bool,
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
        /// The run directory, open as this descriptor
        #[arg(long, value_name = "FD")]
        run_dir_fd: Option<i32>,
        /// The user the tender runs as, without capabilities
        #[arg(long, value_name = "USER")]
        tender_user: Option<String>,
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
    /// When to start it again after it ends: never; on-failure (a non-zero
    /// exit or a signal); on-failure:CODES, only those, e.g. 2,3 or
    /// signal,2-5; always (exit 0 too). Back-off doubles from 1 s to 60 s
    #[arg(long, value_name = "POLICY", default_value = "on-failure")]
    pub restart: RestartPolicy,
    /// The image is zlib-compressed (detected otherwise)
    #[arg(long)]
    pub compressed: bool,
    /// Higher starts first when the host comes up
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Arguments for the unikernel
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// What the data of an upload must be; the daemon refuses it otherwise.
#[derive(clap::Args, Debug)]
pub struct DataCheckArgs {
    /// The data's length in bytes (uncompressed)
    #[arg(long = "size", value_name = "BYTES")]
    pub size: Option<u64>,
    /// The data's SHA-256 (uncompressed), as `sha256sum` prints it
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
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
        #[command(flatten)]
        check: DataCheckArgs,
    },
    /// Replace a block device's contents from a file or stdin (-)
    Upload {
        name: String,
        file: PathBuf,
        #[arg(long)]
        compressed: bool,
        #[command(flatten)]
        check: DataCheckArgs,
    },
    /// Copy a block device's contents to a file or stdout (-)
    Download {
        name: String,
        file: PathBuf,
        /// Send it zlib-compressed
        #[arg(long)]
        compressed: bool,
    },
    /// Make a block device larger (never smaller)
    Grow { name: String, size_mb: u64 },
    /// Delete a block device
    Destroy { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Inspect(#[from] inspect::InspectError),
    #[error("{0}")]
    Monitor(#[from] monitor::MonitorError),
    #[error("{0}")]
    Remote(#[from] remote::RemoteError),
    #[error("{0}")]
    Daemon(#[from] fulmar::host::daemon::DaemonError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Tui(#[from] tui::TuiError),
}

pub fn run(args: Args) -> Result<(), CliError> {
    // The monitor is a small synchronous process: no runtime, no threads.
    if let Some(Command::Monitor {
        status,
        grace_ms,
        console,
        run_dir_fd,
        tender_user,
        argv,
    }) = args.command
    {
        return Ok(monitor::run(&monitor::Options {
            status,
            grace: Duration::from_millis(grace_ms),
            console,
            run_dir_fd,
            tender_user,
            argv,
        })?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(dispatch(args))
}

async fn dispatch(args: Args) -> Result<(), CliError> {
    let command = match args.command {
        None => {
            let options = fulmar::ui::run::Options {
                read_only: args.read_only,
                theme: args.theme,
                config: args.config.clone(),
            };
            return Ok(tui::run(&args, options).await?);
        }
        Some(Command::Inspect {
            ref image,
            json,
            compressed,
        }) => return Ok(inspect::run(&args.dir, image, json, compressed)?),
        Some(Command::Daemon {
            ref group,
            stop_on_exit,
            ref tender_user,
            background,
            ref limits,
        }) => {
            return daemon(
                &args,
                group.clone(),
                stop_on_exit,
                tender_user.clone(),
                background,
                limits.limits(),
            )
            .await;
        }
        Some(ref command) => command,
    };
    let target = remote::Target::new(&args)?;
    if let Command::Proxy = command {
        return Ok(remote::proxy(&target).await?);
    }
    let client = target.client().await.map_err(CliError::from)?;
    let c = &client;
    Ok(match command {
        Command::List { json } => remote::list(c, *json).await,
        Command::Info { name, json } => remote::info(c, name, *json).await,
        Command::Create(create) => remote::create(c, create).await,
        Command::Destroy { name } => destroy_like(c, name, |name| Request::Destroy { name }).await,
        Command::Restart { name } => destroy_like(c, name, |name| Request::Restart { name }).await,
        Command::Remove { name } => destroy_like(c, name, |name| Request::Remove { name }).await,
        Command::Console {
            name,
            follow,
            lines,
            since,
            raw,
        } => {
            let since = remote::since(*lines, since.as_deref())?;
            remote::console(c, remote::label(name)?, since, *follow, *raw).await
        }
        Command::Policy { json } => remote::policy(c, *json).await,
        Command::Stats { name, json } => {
            let name = name.as_deref().map(remote::label).transpose()?;
            remote::stats(c, name, *json).await
        }
        Command::Block(block) => blocks::run(c, block).await,
        Command::Daemon { .. }
        | Command::Proxy
        | Command::Inspect { .. }
        | Command::Monitor { .. } => {
            unreachable!("handled above")
        }
    }?)
}

async fn destroy_like(
    client: &fulmar::wire::client::Client,
    name: &str,
    request: impl FnOnce(fulmar::api::label::Label) -> Request,
) -> Result<(), remote::RemoteError> {
    remote::lifecycle(client, request(remote::label(name)?)).await
}

async fn daemon(
    args: &Args,
    group: Option<String>,
    stop_on_exit: bool,
    tender_user: Option<String>,
    background: bool,
    limits: fulmar::host::daemon::Limits,
) -> Result<(), CliError> {
    if background {
        // Out of the client's session, so its terminal closing does not stop us.
        // Already a session leader (systemd) is fine.
        let _ = nix::unistd::setsid();
    }
    let dirs = fulmar::host::paths::Dirs::resolve(args.dir.clone(), args.runtime_dir.clone())
        .map_err(remote::RemoteError::from)?;
    let socket = args.socket.clone().unwrap_or_else(|| dirs.socket());
    fulmar::host::daemon::run(fulmar::host::daemon::Options {
        dirs,
        socket,
        group,
        stop_on_exit,
        tender_user,
        limits,
    })
    .await?;
    Ok(())
}
