//! The long-running host backend: the supervisor behind the Unix socket, its
//! state saved on every change and brought back when the daemon starts.

pub mod access;
pub(crate) mod blocks;
pub mod connection;
pub mod gate;
pub mod listen;
pub mod session;

use crate::host::paths::{self, Dirs};
use crate::host::privilege::{self, PrivilegeError, TenderUser};
use crate::host::state::{StateError, StateFile, StateWriter};
use crate::host::supervisor::{Saved, Settings, Supervisor};
use access::Access;
use listen::{ListenError, Listener};
use session::Context;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinSet;

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub dirs: Dirs,
    pub socket: PathBuf,
    /// Members of this group may use the daemon (socket 0660 owned by it).
    pub group: Option<String>,
    /// Stop every unikernel when the daemon stops, as albatross does; by
    /// default they keep running and the next daemon re-adopts them.
    pub stop_on_exit: bool,
    /// `--tender-user`: see [`privilege::choose`].
    pub tender_user: Option<String>,
    pub limits: Limits,
}

/// What the daemon lets its clients make it hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest image taken, in bytes uncompressed.
    pub max_image: u64,
    /// Images received at once, by all clients.
    pub image_uploads: usize,
    /// Connections held open at once, of all users and of any one.
    pub connections: gate::Caps,
    /// How long a client may take to say Hello, and a frame that began to go
    /// on (see [`crate::wire::FrameReader::set_stall_timeout`]).
    pub client_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Listen(#[from] ListenError),
    #[error("{0}")]
    Group(String),
    #[error(
        "the daemon may open {limit} files (RLIMIT_NOFILE), too few for --max-connections \
         {connections} and the files its unikernels and transfers need ({needed} in all): raise \
         LimitNOFILE in its systemd unit (or `ulimit -n`), or lower --max-connections"
    )]
    TooFewFiles {
        limit: u64,
        connections: usize,
        needed: u64,
    },
    #[error("{0}")]
    Privilege(#[from] PrivilegeError),
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// How long the daemon waits after a failed accept before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Bursts of events (a crash loop, many creates) make one save.
const SAVE_DEBOUNCE: Duration = Duration::from_millis(50);

/// Descriptors kept beyond the connections' for tenders' consoles, block
/// devices, transfers' pipes and files, the state and the log.
const FILE_HEADROOM: u64 = 256;

/// Raises the soft open-file limit to the hard one, then checks that the
/// connection caps leave room for the rest: past it, every accept and every
/// open would fail, for root too.
fn fit_file_limit(caps: gate::Caps) -> Result<(), DaemonError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let io = |e: nix::Error| DaemonError::Io {
        what: "read or raise the open-file limit",
        source: e.into(),
    };
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io)?;
    }
    let needed = (caps.total as u64)
        .saturating_add((gate::ROOT_RESERVE + gate::REFUSING) as u64)
        .saturating_add(FILE_HEADROOM);
    // rlim_t is unsigned on Linux, signed on FreeBSD (where infinity is its
    // maximum).
    #[allow(clippy::useless_conversion)]
    let hard = u64::try_from(hard).unwrap_or(u64::MAX);
    if hard < needed {
        return Err(DaemonError::TooFewFiles {
            limit: hard,
            connections: caps.total,
            needed,
        });
    }
    Ok(())
}

/// Takes out of `saved` every unikernel named like one listed before it, and
/// keeps them beside the state file before the next save drops them.
fn set_aside_duplicates(saved: &mut Saved, writer: &StateWriter<Saved>) -> Result<(), StateError> {
    let unikernels = saved.take_duplicates();
    if unikernels.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = unikernels.iter().map(|u| u.config.name.as_str()).collect();
    let names = names.join(", ");
    let aside = writer.set_aside("duplicates", &Saved { unikernels })?;
    tracing::error!(
        "{} lists more than one unikernel named {names}: kept the first of each and set the \
         others aside in {}, a state file of their own, so nothing is lost: to have one back, \
         create it under another name from what that file records",
        writer.path().display(),
        aside.display()
    );
    Ok(())
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    fit_file_limit(opts.limits.connections)?;
    let loaded = StateFile::<Saved>::new(&opts.dirs.data).load()?;
    let tender = privilege::choose(opts.tender_user.as_deref())?;
    let group = opts
        .group
        .as_deref()
        .map(access::resolve_group)
        .transpose()
        .map_err(DaemonError::Group)?;
    let Listener { listener, bound } = match listen::activated()? {
        Some(l) => l,
        None => listen::bind(&opts.socket, group)?,
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| DaemonError::Io {
            what: "listen",
            source,
        })?;
    let listener = UnixListener::from_std(listener).map_err(|source| DaemonError::Io {
        what: "listen",
        source,
    })?;

    match opts.dirs.tighten() {
        Ok(changed) => changed
            .iter()
            .for_each(|d| tracing::warn!("{} was readable by others: made it 0700", d.display())),
        Err(e) => tracing::warn!("cannot make the data directories 0700: {e}"),
    }
    if let Some(user) = &tender {
        open_dirs_to(&opts.dirs, user)?;
    }
    let sup = Supervisor::new(Settings {
        tender,
        ..Settings::new(opts.dirs.clone())
    });
    // Uploads a crash interrupted: their devices kept the old contents.
    let stale = sup.block_store().clean_stale();
    if stale > 0 {
        tracing::info!("removed {stale} unfinished block uploads");
    }
    let stale = sup.clean_stale_images();
    if stale > 0 {
        tracing::info!("removed {stale} unfinished images and image uploads");
    }
    let mut saved = loaded.state.unwrap_or_default();
    set_aside_duplicates(&mut saved, &loaded.writer)?;
    for failure in sup.restore(saved).await {
        tracing::warn!("{} was not started: {}", failure.name, failure.reason);
    }
    let persist = Arc::new(Persist {
        writer: Mutex::new(loaded.writer),
    });
    let saving = tokio::spawn(keep_saved(sup.clone(), persist.clone()));
    let ctx = Arc::new(Context {
        sup: sup.clone(),
        uploads: opts.dirs.data.join("images"),
        persist: persist.clone(),
        max_image: opts.limits.max_image,
        image_uploads: Arc::new(tokio::sync::Semaphore::new(opts.limits.image_uploads)),
    });
    listen::notify_ready();
    tracing::info!("listening on {}", opts.socket.display());
    let admission = connection::Admission {
        access: Access::new(group),
        gate: gate::Gate::new(opts.limits.connections),
        timeout: opts.limits.client_timeout,
    };
    accept_until_signal(listener, ctx, admission).await?;

    if opts.stop_on_exit {
        stop_all(&sup).await;
    }
    saving.abort();
    // Logged; nobody is left to tell.
    let _ = persist.save(&sup).await;
    if let Some(path) = bound {
        // Gone already is fine; it is only tidiness.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The tender user's way to its files (host::privilege): the top directories
/// searchable by others, the daemon's own by the tender's group.
fn open_dirs_to(dirs: &Dirs, user: &TenderUser) -> Result<(), DaemonError> {
    for (top, own) in [(&dirs.data, "block"), (&dirs.runtime, "unikernels")] {
        let own = top.join(own);
        paths::private_dir(&own).map_err(|source| PrivilegeError::Grant {
            path: own.clone(),
            source,
        })?;
        privilege::open_to_search(top)?;
        user.may_search(&own)?;
    }
    Ok(())
}

async fn accept_until_signal(
    listener: UnixListener,
    ctx: Arc<Context>,
    admission: connection::Admission,
) -> Result<(), DaemonError> {
    let io = |source| DaemonError::Io {
        what: "handle signals",
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut failing = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("accepting connections again");
                    }
                    tokio::spawn(connection::serve(stream, ctx.clone(), admission.clone()));
                }
                // Out of descriptors and the like: the next accept may work,
                // once a connection closes; said once, not at every retry.
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            "cannot accept connections ({e}): retrying every {ACCEPT_RETRY:?}; \
                             if out of files, raise LimitNOFILE or lower --max-connections"
                        );
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping");
    Ok(())
}

async fn stop_all(sup: &Supervisor) {
    let mut stops = JoinSet::new();
    for u in sup.list() {
        let sup = sup.clone();
        stops.spawn(async move { sup.destroy(&u.config.name).await });
    }
    while let Some(done) = stops.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!("{e}");
        }
    }
}

/// The state file, saved from the supervisor's snapshot.
pub struct Persist {
    writer: Mutex<StateWriter<Saved>>,
}

impl Persist {
    /// Saves now (the file write on a blocking thread). A failure is logged
    /// and returned, for a request to tell its client; the daemon keeps
    /// serving, and the next save may work.
    pub async fn save(self: &Arc<Self>, sup: &Supervisor) -> Result<(), String> {
        let snapshot = sup.snapshot();
        let me = self.clone();
        let saved = tokio::task::spawn_blocking(move || {
            me.writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .save(&snapshot)
        })
        .await;
        let failure = match saved {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("saving the state failed: {e}"),
        };
        tracing::error!("{failure}");
        Err(failure)
    }
}

/// Saves the supervisor's state after every burst of changes it makes on its
/// own (exits, restarts); requests that change things save before answering.
async fn keep_saved(sup: Supervisor, persist: Arc<Persist>) {
    let mut events = sup.events();
    loop {
        // Logged; the next change tries again.
        let _ = persist.save(&sup).await;
        // Lagged only means more happened: the next save covers it.
        if let Err(RecvError::Closed) = events.recv().await {
            return;
        }
        tokio::time::sleep(SAVE_DEBOUNCE).await;
        while !matches!(
            events.try_recv(),
            Err(TryRecvError::Empty | TryRecvError::Closed)
        ) {}
    }
}
