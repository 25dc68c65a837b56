//! The subcommands that talk to the daemon.

use crate::cli::connect::{self, ConnectError};
use crate::cli::create::{self, CreateError};
use crate::cli::show::{self, print, print_json};
use crate::cli::{Args, CreateArgs};
use fulmar::api::console::{ConsoleEvent, LineSource, Since, visible};
use fulmar::api::label::{Label, LabelError};
use fulmar::api::protocol::{Reply, Request, StreamItem};
use fulmar::api::time::now_ms;
use fulmar::api::unikernel::RunState;
use fulmar::host::paths::{Dirs, PathsError};
use fulmar::wire::client::{Client, ClientError};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Paths(#[from] PathsError),
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Create(#[from] CreateError),
    #[error("{0}")]
    Name(#[from] LabelError),
    #[error("cannot read the image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--since {0:?}: write a duration such as 90s, 10m, 2h or 1d")]
    Since(String),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error(
        "the daemon answered {0}, which this fulmar did not expect: run the same fulmar version on both ends"
    )]
    Unexpected(String),
}

/// Where the daemon is, and what to pass to one started in the background.
pub struct Target {
    pub socket: PathBuf,
    pub runtime: PathBuf,
    pub may_start: bool,
    pub daemon_args: Vec<OsString>,
}

impl Target {
    pub fn new(args: &Args) -> Result<Target, RemoteError> {
        let dirs = Dirs::resolve(args.dir.clone(), args.runtime_dir.clone())?;
        let socket = args.socket.clone().unwrap_or_else(|| dirs.socket());
        let mut daemon_args: Vec<OsString> = Vec::new();
        for (flag, value) in [("--dir", &args.dir), ("--runtime-dir", &args.runtime_dir)] {
            if let Some(v) = value {
                daemon_args.push(flag.into());
                daemon_args.push(v.into());
            }
        }
        daemon_args.push("--socket".into());
        daemon_args.push(socket.clone().into());
        Ok(Target {
            socket,
            runtime: dirs.runtime,
            may_start: !args.no_start,
            daemon_args,
        })
    }

    pub async fn stream(&self) -> Result<tokio::net::UnixStream, RemoteError> {
        Ok(connect::connect(
            &self.socket,
            &self.runtime,
            self.may_start,
            &self.daemon_args,
        )
        .await?)
    }

    pub async fn client(&self) -> Result<Client, RemoteError> {
        let (read, write) = self.stream().await?.into_split();
        Ok(Client::over(read, write).await?)
    }
}

fn unexpected(reply: Reply) -> RemoteError {
    RemoteError::Unexpected(format!("{reply:?}"))
}

pub async fn list(client: &Client, json: bool) -> Result<(), RemoteError> {
    let Reply::Unikernels { unikernels } = client.call(Request::List).await? else {
        return Err(RemoteError::Unexpected("not a list".into()));
    };
    if json {
        print_json(
            &unikernels
                .iter()
                .map(show::ListRow::new)
                .collect::<Vec<_>>(),
        )
    } else {
        print(&show::list_table(&unikernels))
    }
}

pub async fn info(client: &Client, name: &str, json: bool) -> Result<(), RemoteError> {
    let reply = client.call(Request::Info { name: label(name)? }).await?;
    let Reply::Unikernel { unikernel } = reply else {
        return Err(unexpected(reply));
    };
    if json {
        print_json(&unikernel)
    } else {
        print(&show::info_text(&unikernel))
    }
}

pub async fn create(client: &Client, args: &CreateArgs) -> Result<(), RemoteError> {
    let config = create::config(args)?;
    let image_err = |source| RemoteError::Image {
        path: args.image.clone(),
        source,
    };
    let image = if args.image.as_os_str() == "-" {
        client
            .put_image(tokio::io::stdin(), args.compressed)
            .await?
    } else {
        let file = tokio::fs::File::open(&args.image)
            .await
            .map_err(image_err)?;
        client.put_image(file, args.compressed).await?
    };
    let reply = client
        .call(Request::Create {
            config,
            image: image.sha256,
        })
        .await?;
    let Reply::Unikernel { unikernel } = reply else {
        return Err(unexpected(reply));
    };
    let how = match unikernel.state {
        RunState::Running { pid, .. } => format!("running, pid {pid}"),
        other => other.name().to_owned(),
    };
    print(&format!("{}: {how}\n", unikernel.config.name))
}

/// destroy, restart: one unikernel, answered with its new state.
pub async fn lifecycle(client: &Client, request: Request) -> Result<(), RemoteError> {
    match client.call(request).await? {
        Reply::Unikernel { unikernel } => print(&format!(
            "{}: {}\n",
            unikernel.config.name,
            unikernel.state.name()
        )),
        Reply::Done => Ok(()),
        Reply::Removed {
            name,
            kept_for,
            freed_bytes,
        } => print(&removed(&name, &kept_for, freed_bytes)),
        other => Err(unexpected(other)),
    }
}

/// What `fulmar remove` says of the image store.
fn removed(name: &Label, kept_for: &[Label], freed_bytes: u64) -> String {
    let mut line = format!("{name}: removed");
    if !kept_for.is_empty() {
        let names: Vec<&str> = kept_for.iter().map(Label::as_str).collect();
        line += &format!("; its image is kept for {}", names.join(", "));
    }
    if freed_bytes > 0 {
        line += &format!(
            "; {} of unused images deleted",
            fulmar::ui::format::bytes(freed_bytes)
        );
    }
    line + "\n"
}

pub fn label(name: &str) -> Result<Label, RemoteError> {
    Ok(Label::new(name)?)
}

/// `--since 10m` as a time; `--lines N`; or everything.
pub fn since(lines: Option<usize>, since: Option<&str>) -> Result<Since, RemoteError> {
    if let Some(n) = lines {
        return Ok(Since::LastLines(n as u64));
    }
    let Some(text) = since else {
        return Ok(Since::Everything);
    };
    let bad = || RemoteError::Since(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(Since::TimeMs(
        now_ms().saturating_sub(n.saturating_mul(unit_ms)),
    ))
}

/// Prints a console; on a terminal every control byte is shown escaped,
/// unless `raw`.
pub async fn console(
    client: &Client,
    name: Label,
    since: Since,
    follow: bool,
    raw: bool,
) -> Result<(), RemoteError> {
    let escape = !raw && std::io::stdout().is_terminal();
    let mut stream = client
        .stream(Request::Console {
            name,
            since,
            follow,
        })
        .await?;
    let mut out = tokio::io::stdout();
    while let Some(item) = stream.next().await {
        let text: Vec<u8> = match item? {
            StreamItem::Console {
                event: ConsoleEvent::Line(line),
            } => {
                let body = if escape {
                    visible(&line.bytes).into_bytes()
                } else {
                    line.bytes
                };
                match line.source {
                    LineSource::Unikernel => body,
                    LineSource::Fulmar => [b"[fulmar] ".as_slice(), &body].concat(),
                }
            }
            StreamItem::Console {
                event: ConsoleEvent::Dropped { count },
            } => format!("[fulmar] {count} lines dropped: this client fell behind").into_bytes(),
            StreamItem::Event { .. } | StreamItem::Progress { .. } => continue,
        };
        out.write_all(&text).await.map_err(RemoteError::Output)?;
        out.write_all(b"\n").await.map_err(RemoteError::Output)?;
        if follow {
            out.flush().await.map_err(RemoteError::Output)?;
        }
    }
    out.flush().await.map_err(RemoteError::Output)
}

pub async fn policy(client: &Client, json: bool) -> Result<(), RemoteError> {
    let reply = client.call(Request::Policy).await?;
    let Reply::Policy { policy } = reply else {
        return Err(unexpected(reply));
    };
    if json {
        print_json(&policy)
    } else {
        print(&show::policy_text(&policy))
    }
}

pub async fn stats(client: &Client, name: Option<Label>, json: bool) -> Result<(), RemoteError> {
    let reply = client.call(Request::Stats { name }).await?;
    let Reply::Stats { stats } = reply else {
        return Err(unexpected(reply));
    };
    if json {
        print_json(&stats)
    } else {
        print(&show::stats_table(&stats))
    }
}

/// Carries the protocol between stdin/stdout and the local daemon, for
/// `ssh HOST fulmar proxy`.
pub async fn proxy(target: &Target) -> Result<(), RemoteError> {
    let (mut from_daemon, mut to_daemon) = target.stream().await?.into_split();
    let up = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut to_daemon).await?;
        to_daemon.shutdown().await
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut from_daemon, &mut stdout).await?;
        stdout.flush().await
    };
    // Either side closing ends the session.
    tokio::select! {
        r = up => r,
        r = down => r,
    }
    .map_err(RemoteError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations() {
        assert_eq!(since(Some(5), None).unwrap(), Since::LastLines(5));
        assert_eq!(since(None, None).unwrap(), Since::Everything);
        let Since::TimeMs(t) = since(None, Some("10m")).unwrap() else {
            panic!()
        };
        let expected = now_ms() - 600_000;
        assert!(t.abs_diff(expected) < 5_000);
        for bad in ["", "10", "m", "10y", "-1s"] {
            assert!(since(None, Some(bad)).is_err(), "{bad}");
        }
    }
}
