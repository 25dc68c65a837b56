//! `fulmar` with no subcommand: the TUI, connected through the same socket
//! and auto-start as every other client.

use crate::cli::Args;
use crate::cli::remote::{RemoteError, Target};
use fulmar::ui::link::Connect;
use fulmar::ui::run::{self, Options, UiError};
use fulmar::wire::client::Client;
use std::sync::{Arc, Mutex, PoisonError};

pub async fn run(args: &Args, options: Options) -> Result<(), TuiError> {
    let config = run::prepare(&options)?;
    let target = Target::new(args)?;
    // The first connection may start a daemon, and says so on stderr: do it
    // while the terminal is still a plain terminal.
    let first = target.client().await?;
    run::run(options, config, reconnecting(first, target)).await?;
    Ok(())
}

/// Hands out `first`, then fresh connections. A reconnect never starts a
/// daemon: one that went away was stopped on purpose or is being restarted.
fn reconnecting(first: Client, mut target: Target) -> Connect {
    target.may_start = false;
    let first = Mutex::new(Some(first));
    let target = Arc::new(target);
    Box::new(move || {
        let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
        let target = target.clone();
        Box::pin(async move {
            match first {
                Some(client) => Ok(client),
                None => target.client().await.map_err(|e| e.to_string()),
            }
        })
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("{0}")]
    Ui(#[from] UiError),
    #[error("{0}")]
    Remote(#[from] RemoteError),
}
