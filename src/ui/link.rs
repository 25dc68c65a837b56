//! The link to the daemon: one task that connects, mirrors the daemon's state
//! into [`Update`]s, carries out [`Command`]s, and when the connection is lost
//! says so and reconnects by itself, resubscribing to every console the app
//! still watches. The app never waits on it.

use crate::api::label::Label;
use crate::api::protocol::{Reply, Request, StreamItem};
use crate::ui::message::{Command, Update};
use crate::ui::transfer::{self, Job, Transfers};
use crate::wire::client::{Client, ClientError};
use futures_util::FutureExt;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

mod form;

use form::FormCommand;

/// Opens a fresh connection to the daemon; the error says why not.
pub type Connect =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Client, String>> + Send>> + Send + Sync>;

/// Between tries to reach a daemon that is gone: short first, then patient.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(3);
/// How often the counters of running unikernels are read.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Events come in bursts (a restart is three); one list request answers them all.
const EVENT_SETTLE: Duration = Duration::from_millis(30);

/// Starts the link; updates go to `updates`, commands come from the sender it returns.
pub fn spawn(connect: Connect, updates: mpsc::Sender<Update>) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(connect, rx, updates));
    tx
}

/// Why a session ended.
enum Ended {
    /// The app is gone: stop.
    AppGone,
    Lost(String),
}

struct Link {
    commands: mpsc::UnboundedReceiver<Command>,
    updates: mpsc::Sender<Update>,
    /// The consoles the app watches; they outlive connections.
    watched: BTreeSet<Label>,
    /// Block transfers, each on a connection of its own from `connect`.
    connect: Arc<Connect>,
    transfers: Transfers,
}

async fn run(
    connect: Connect,
    commands: mpsc::UnboundedReceiver<Command>,
    updates: mpsc::Sender<Update>,
) {
    let connect = Arc::new(connect);
    let mut link = Link {
        commands,
        updates,
        watched: BTreeSet::new(),
        connect: connect.clone(),
        transfers: Transfers::default(),
    };
    let mut retry = FIRST_RETRY;
    loop {
        let reason = match connect().await {
            Ok(client) => {
                retry = FIRST_RETRY;
                match link.session(Arc::new(client)).await {
                    Ended::AppGone => return,
                    Ended::Lost(reason) => reason,
                }
            }
            Err(reason) => reason,
        };
        if !link.send(Update::Disconnected { reason }).await || !link.wait(retry).await {
            return;
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}

impl Link {
    async fn send(&self, update: Update) -> bool {
        self.updates.send(update).await.is_ok()
    }

    /// Sits out `pause` while still taking commands; false when the app is gone.
    async fn wait(&mut self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Watch(name)) => { self.watched.insert(name); }
                    Some(Command::Unwatch(name)) => { self.watched.remove(&name); }
                    Some(Command::CancelTransfer(name)) => { self.transfers.cancel(&name); }
                    Some(save @ Command::SaveConsole { .. }) => self.spawn_save(save),
                    Some(command) => match FormCommand::of(command) {
                        Ok(form) => form.spawn(None, self.updates.clone()),
                        Err(other) => {
                            let outcome = Err("not connected to the daemon; try again once it is back".to_string());
                            if !self.send(Update::Done { what: other.describe(), outcome }).await {
                                return false;
                            }
                        }
                    },
                },
            }
        }
    }

    async fn session(&mut self, client: Arc<Client>) -> Ended {
        // Subscribe before listing, so no change falls between the two.
        let mut events = match client.stream(Request::Events).await {
            Ok(events) => events,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        let daemon = client.daemon().software.clone();
        if !self.send(Update::Connected { daemon }).await {
            return Ended::AppGone;
        }
        for request in [Request::List, Request::Policy, Request::BlockList] {
            if let Err(ended) = self.fetch(&client, request).await {
                return ended;
            }
        }
        let mut consoles: HashMap<Label, ConsoleTask> = HashMap::new();
        for name in self.watched.clone() {
            consoles.insert(name.clone(), self.follow(&client, name, None));
        }
        let ended = self.serve(&client, &mut events, &mut consoles).await;
        consoles.values().for_each(JoinHandle::abort);
        ended
    }

    /// The session's loop: commands, events, stats, until one side goes.
    async fn serve(
        &mut self,
        client: &Arc<Client>,
        events: &mut crate::wire::client::Stream,
        consoles: &mut HashMap<Label, ConsoleTask>,
    ) -> Ended {
        let mut stats = tokio::time::interval(STATS_EVERY);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut relist: Option<Instant> = None;
        loop {
            let settle = async {
                match relist {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::AppGone };
                    self.command(client, command, consoles);
                }
                item = events.next() => match item {
                    Some(Ok(StreamItem::Event { .. })) => {
                        relist.get_or_insert(Instant::now() + EVENT_SETTLE);
                    }
                    Some(Ok(other)) => return Ended::Lost(format!("unexpected {other:?} on the event stream")),
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("the daemon closed the event stream".into()),
                },
                () = settle => {
                    relist = None;
                    // Creating or removing a unikernel changes what the policy and blocks show too.
                    for request in [Request::List, Request::Policy, Request::BlockList] {
                        if let Err(ended) = self.fetch(client, request).await {
                            return ended;
                        }
                    }
                    self.refollow(client, consoles);
                }
                _ = stats.tick() => {
                    if let Err(ended) = self.fetch(client, Request::Stats { name: None }).await {
                        return ended;
                    }
                }
            }
        }
    }

    fn command(
        &mut self,
        client: &Arc<Client>,
        command: Command,
        consoles: &mut HashMap<Label, ConsoleTask>,
    ) {
        match command {
            Command::Watch(name) => {
                if self.watched.insert(name.clone()) {
                    consoles.insert(name.clone(), self.follow(client, name, None));
                }
            }
            Command::Unwatch(name) => {
                self.watched.remove(&name);
                if let Some(task) = consoles.remove(&name) {
                    task.abort();
                }
            }
            Command::RefreshBlocks => self.spawn_fetch(client, Request::BlockList),
            Command::RefreshPolicy => self.spawn_fetch(client, Request::Policy),
            Command::Destroy(name) => self.spawn_call(client, Request::Destroy { name }),
            Command::Restart(name) => self.spawn_call(client, Request::Restart { name }),
            Command::Remove(name) => self.spawn_call(client, Request::Remove { name }),
            Command::BlockCreate { .. }
            | Command::BlockUpload { .. }
            | Command::BlockDownload { .. }
            | Command::BlockDestroy(_) => match Job::of(&command) {
                Some(job) => self.transfers.start(&self.connect, job, &self.updates),
                None => transfer::change(client, &command, &self.updates),
            },
            Command::CancelTransfer(name) => {
                self.transfers.cancel(&name);
            }
            command @ (Command::CompletePath(_)
            | Command::InspectImage(_)
            | Command::Create { .. }
            | Command::Reconfigure(_)) => {
                if let Ok(form) = FormCommand::of(command) {
                    form.spawn(Some(client.clone()), self.updates.clone());
                }
            }
            save @ Command::SaveConsole { .. } => self.spawn_save(save),
        }
    }

    /// Saves console text to the operator's file, off the async threads; the
    /// outcome comes back as `Done`. Needs no daemon, so it works disconnected too.
    fn spawn_save(&self, save: Command) {
        let what = save.describe();
        let Command::SaveConsole { path, text } = save else {
            return;
        };
        let updates = self.updates.clone();
        tokio::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || {
                save_new_file(&local_path(&path), text.as_bytes())
            })
            .await
            .map_err(|e| format!("the save was interrupted: {e}"))
            .and_then(|saved| saved.map_err(|e| e.to_string()));
            let _ = updates.send(Update::Done { what, outcome }).await;
        });
    }

    /// Asks `request` and passes the answer on as an update.
    async fn fetch(&self, client: &Client, request: Request) -> Result<(), Ended> {
        let update = match client.call(request).await {
            Ok(reply) => as_update(reply),
            Err(ClientError::Daemon(e)) => Some(Update::Done {
                what: "refresh".into(),
                outcome: Err(e.message),
            }),
            Err(e) => return Err(Ended::Lost(e.to_string())),
        };
        match update {
            Some(update) => match self.send(update).await {
                true => Ok(()),
                false => Err(Ended::AppGone),
            },
            None => Ok(()),
        }
    }

    /// [`Link::fetch`] in the background, for requests the app asked for.
    fn spawn_fetch(&self, client: &Arc<Client>, request: Request) {
        let (client, updates) = (client.clone(), self.updates.clone());
        tokio::spawn(async move {
            if let Ok(Some(update)) = client.call(request).await.map(as_update) {
                let _ = updates.send(update).await;
            }
        });
    }

    /// An operator's command, in the background; its outcome comes back as `Done`.
    fn spawn_call(&self, client: &Arc<Client>, request: Request) {
        let what = describe(&request);
        let (client, updates) = (client.clone(), self.updates.clone());
        tokio::spawn(async move {
            let outcome = client
                .call(request)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = updates.send(Update::Done { what, outcome }).await;
        });
    }

    /// Follows again the watched consoles whose stream ended: their unikernel
    /// was removed (or not there yet) and may have been created since.
    fn refollow(&self, client: &Arc<Client>, consoles: &mut HashMap<Label, ConsoleTask>) {
        for (name, task) in consoles.iter_mut() {
            if task.is_finished() {
                let reported = task.now_or_never().and_then(Result::ok).flatten();
                *task = self.follow(client, name.clone(), reported);
            }
        }
    }

    /// Streams `name`'s console (history, then live) into updates. Lines seen
    /// before a reconnect come again and the app's buffer skips them by `seq`.
    /// Whatever stops the stream but its end reaches the app as a failed
    /// `Done`, so the operator learns why the console stopped moving; once,
    /// not again on every refollow while the reason stays `reported`.
    fn follow(&self, client: &Arc<Client>, name: Label, reported: Option<String>) -> ConsoleTask {
        let (client, updates) = (client.clone(), self.updates.clone());
        tokio::spawn(async move {
            let reason = stream_console(&client, &name, &updates).await.err()?;
            if reported.as_ref() != Some(&reason) {
                let what = format!("following the console of {name}");
                let outcome = Err(reason.clone());
                let _ = updates.send(Update::Done { what, outcome }).await;
            }
            Some(reason)
        })
    }
}

/// A followed console; it ends with the failure it reported, if any.
type ConsoleTask = JoinHandle<Option<String>>;

/// Sends `name`'s console lines as updates until the stream, the connection or
/// the app ends (`Ok`: a lost connection is the link's to report, once, as
/// the disconnection), or the stream fails (`Err`, why).
async fn stream_console(
    client: &Client,
    name: &Label,
    updates: &mpsc::Sender<Update>,
) -> Result<(), String> {
    let request = Request::Console {
        name: name.clone(),
        since: crate::api::console::Since::Everything,
        follow: true,
    };
    let connection_lost =
        |e: &ClientError| matches!(e, ClientError::Closed | ClientError::Frame(_));
    let mut stream = match client.stream(request).await {
        Ok(stream) => stream,
        Err(e) if connection_lost(&e) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    loop {
        let event = match stream.next().await {
            None => return Ok(()),
            Some(Ok(StreamItem::Console { event })) => event,
            Some(Ok(other)) => return Err(format!("unexpected {other:?} on the console stream")),
            Some(Err(e)) if connection_lost(&e) => return Ok(()),
            Some(Err(e)) => return Err(e.to_string()),
        };
        let name = name.clone();
        if updates.send(Update::Console { name, event }).await.is_err() {
            return Ok(());
        }
    }
}

/// Why a console could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{} already exists: fulmar never overwrites a file; give another name", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}; check that the directory exists and that you may write there", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A path as the operator types it: `~` or `~/...` at the start means their
/// home, as in their shell; anything else is taken as it is.
pub fn local_path(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => path.to_owned(),
    }
}

/// Writes `bytes` into a new file at `path`, readable by its owner only; an
/// existing file (or symlink) there is left alone and refused, and a file
/// left half-written by an error is removed.
pub fn save_new_file(path: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let write_error = |source| SaveError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SaveError::Exists {
                path: path.to_path_buf(),
            },
            _ => write_error(e),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            write_error(e)
        })
}

fn describe(request: &Request) -> String {
    match request {
        Request::Destroy { name } => Command::Destroy(name.clone()).describe(),
        Request::Restart { name } => Command::Restart(name.clone()).describe(),
        Request::Remove { name } => Command::Remove(name.clone()).describe(),
        other => format!("{other:?}"),
    }
}

fn as_update(reply: Reply) -> Option<Update> {
    match reply {
        Reply::Unikernels { unikernels } => Some(Update::Unikernels(unikernels)),
        Reply::Policy { policy } => Some(Update::Policy(policy)),
        Reply::Blocks { blocks, .. } => Some(Update::Blocks(blocks)),
        Reply::Stats { stats } => Some(Update::Stats(
            stats.into_iter().map(|s| (s.name, s.stats)).collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_saved_console_is_a_new_private_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-console.log");
        save_new_file(&path, b"one\ntwo\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let err = save_new_file(&path, b"other").unwrap_err();
        assert!(matches!(err, SaveError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn a_save_into_a_missing_directory_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("web.log");
        let err = save_new_file(&path, b"x").unwrap_err();
        assert!(matches!(err, SaveError::Write { .. }), "{err}");
        assert!(err.to_string().contains("directory exists"), "{err}");
    }
    #[test]
    fn a_tilde_means_home() {
        let Some(home) = std::env::var_os("HOME") else {
            eprintln!("skipped: HOME is not set");
            return;
        };
        assert_eq!(
            local_path(Path::new("~/d.img")),
            Path::new(&home).join("d.img")
        );
        assert_eq!(local_path(Path::new("/x/~/d")), Path::new("/x/~/d"));
        assert_eq!(local_path(Path::new("rel/d")), Path::new("rel/d"));
    }
}
