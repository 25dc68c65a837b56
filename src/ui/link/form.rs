//! The link's side of the create and edit form: path completion over the
//! operator's own files, the image file sent to the daemon to be checked,
//! and the create or reconfigure request. Each runs in the background and
//! answers with an [`Update::Form`]; the form never touches a file itself.

use crate::api::image::InspectReport;
use crate::api::label::Label;
use crate::api::protocol::{ApiError, ErrorKind, Reply, Request};
use crate::ui::link::local_path;
use crate::ui::message::{Command, FormReply, Update};
use crate::wire::client::{Client, ClientError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

const OFFLINE: &str = "not connected to the daemon; try again once it is back";

/// A form's command, as the link carries it out.
pub(super) enum FormCommand {
    Complete(String),
    Inspect(String),
    /// Create or reconfigure the unikernel named.
    Submit(Label, Request),
}

impl FormCommand {
    /// The form's commands; any other is given back.
    pub(super) fn of(command: Command) -> Result<FormCommand, Command> {
        Ok(match command {
            Command::CompletePath(typed) => FormCommand::Complete(typed),
            Command::InspectImage(path) => FormCommand::Inspect(path),
            Command::Create { config, image } => FormCommand::Submit(
                config.name.clone(),
                Request::Create {
                    config: *config,
                    image,
                },
            ),
            Command::Reconfigure(config) => FormCommand::Submit(
                config.name.clone(),
                Request::Reconfigure { config: *config },
            ),
            other => return Err(other),
        })
    }

    /// Carries the command out in the background and sends its answer.
    /// Without a daemon (`client` is `None`) completion still works and the
    /// rest is refused.
    pub(super) fn spawn(self, client: Option<Arc<Client>>, updates: mpsc::Sender<Update>) {
        tokio::spawn(async move {
            let reply = match self {
                FormCommand::Complete(typed) => {
                    let listed = typed.clone();
                    let outcome = tokio::task::spawn_blocking(move || complete(&listed))
                        .await
                        .unwrap_or_else(|e| Err(format!("listing failed: {e}")));
                    FormReply::Completions { typed, outcome }
                }
                FormCommand::Inspect(path) => {
                    let outcome = match &client {
                        Some(client) => inspect(client, &path).await,
                        None => Err(OFFLINE.to_string()),
                    };
                    FormReply::Image { path, outcome }
                }
                FormCommand::Submit(name, request) => FormReply::Submitted {
                    name,
                    outcome: submit(client.as_deref(), request).await,
                },
            };
            // The app may be gone; then nobody waits for the answer.
            let _ = updates.send(Update::Form(reply)).await;
        });
    }
}

/// Every entry of the typed path's directory whose name starts with what was
/// typed after the last `/`, written as typed, directories with a trailing
/// `/`, sorted. Hidden entries only when the name typed starts with `.`.
pub fn complete(typed: &str) -> Result<Vec<String>, String> {
    let (dir_typed, prefix) = match typed.rfind('/') {
        Some(i) => typed.split_at(i + 1),
        None => ("", typed),
    };
    let dir = if dir_typed.is_empty() {
        PathBuf::from(".")
    } else {
        local_path(Path::new(dir_typed))
    };
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            // A name that is not UTF-8 cannot be typed into the field either.
            let name = entry.file_name().into_string().ok()?;
            let wanted =
                name.starts_with(prefix) && (prefix.starts_with('.') || !name.starts_with('.'));
            let slash = if entry.path().is_dir() { "/" } else { "" };
            wanted.then(|| format!("{dir_typed}{name}{slash}"))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Sends the image file at `path` to the daemon, which checks and keeps it.
async fn inspect(client: &Client, path: &str) -> Result<InspectReport, String> {
    let file = tokio::fs::File::open(local_path(Path::new(path)))
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let request = Request::PutImage { compressed: false };
    match client.send_data(request, file, |_| {}).await {
        Ok(Reply::Image { image, tender }) => Ok(InspectReport { image, tender }),
        Ok(other) => Err(ClientError::Unexpected(format!("{other:?}")).to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn submit(client: Option<&Client>, request: Request) -> Result<(), ApiError> {
    let Some(client) = client else {
        return Err(ApiError::new(ErrorKind::Host, OFFLINE));
    };
    match client.call(request).await {
        Ok(_) => Ok(()),
        Err(ClientError::Daemon(e)) => Err(e),
        Err(e) => Err(ApiError::new(ErrorKind::Host, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_lists_matching_entries_as_typed() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["web.hvt", "web.spt", "db.hvt", ".hidden"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("webroot")).unwrap();
        let base = format!("{}/", dir.path().display());
        let got = complete(&format!("{base}we")).unwrap();
        assert_eq!(
            got,
            [
                format!("{base}web.hvt"),
                format!("{base}web.spt"),
                format!("{base}webroot/")
            ]
        );
        assert_eq!(complete(&base).unwrap().len(), 4, "no hidden entries");
        assert_eq!(
            complete(&format!("{base}.h")).unwrap(),
            [format!("{base}.hidden")]
        );
        assert_eq!(complete(&format!("{base}x")).unwrap(), Vec::<String>::new());
        let err = complete(&format!("{base}nope/x")).unwrap_err();
        assert!(err.starts_with("cannot list"), "{err}");
    }

    #[tokio::test]
    async fn without_a_daemon_completion_works_and_the_rest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.hvt"), b"").unwrap();
        let typed = format!("{}/w", dir.path().display());
        let (tx, mut rx) = mpsc::channel(4);
        let complete = FormCommand::of(Command::CompletePath(typed.clone()));
        complete.ok().unwrap().spawn(None, tx.clone());
        assert_eq!(
            rx.recv().await,
            Some(Update::Form(FormReply::Completions {
                outcome: Ok(vec![format!("{}/web.hvt", dir.path().display())]),
                typed,
            }))
        );
        let config = crate::api::unikernel::UnikernelConfig::new(Label::new("web").unwrap());
        let create = Command::Create {
            config: Box::new(config),
            image: "0".repeat(64),
        };
        FormCommand::of(create)
            .ok()
            .unwrap()
            .spawn(None, tx.clone());
        let Some(Update::Form(FormReply::Submitted { name, outcome })) = rx.recv().await else {
            panic!("no answer");
        };
        assert_eq!(name.as_str(), "web");
        assert_eq!(outcome.unwrap_err().message, OFFLINE);
        let restart = Command::Restart(Label::new("web").unwrap());
        assert!(matches!(FormCommand::of(restart.clone()), Err(c) if c == restart));
    }
}
