//! The task that owns one run's monitor until the run ends.

use super::Inner;
use super::launch;
use crate::api::label::Label;
use crate::api::unikernel::ExitStatus;
use crate::host::monitor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The task that watches one run until its monitor reports the end.
pub(super) struct RunTask {
    pub inner: Arc<Inner>,
    pub name: Label,
    pub monitored: monitor::Monitored,
    pub resources: launch::Resources,
    pub drain: tokio::task::JoinHandle<()>,
    pub ended: watch::Sender<bool>,
}

/// How long the console may take to reach end-of-file after the tender has
/// ended (a process the tender started could hold the FIFO open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long after the grace period a stopped run's monitor may take to report
/// the end before the daemon kills the tender and the monitor itself.
pub(super) const STOP_MARGIN: Duration = Duration::from_secs(2);

impl RunTask {
    pub async fn supervise(mut self, stop: oneshot::Receiver<()>) {
        let started = Instant::now();
        let status = self.wait_or_stop(stop).await;
        if tokio::time::timeout(DRAIN_GRACE, &mut self.drain)
            .await
            .is_err()
        {
            self.drain.abort();
        }
        self.resources.release();
        self.inner.ended(&self.name, status, started.elapsed());
        // Destroy waits for this; nobody waiting is fine.
        let _ = self.ended.send(true);
    }

    /// Waits for the run to end; when asked to stop, has the monitor send
    /// SIGTERM and, after the grace period, SIGKILL. Normally only the monitor
    /// signals the tender, its child; the daemon does only when the monitor
    /// fails to, through a handle checked against the tender's start time.
    async fn wait_or_stop(&mut self, stop: oneshot::Receiver<()>) -> ExitStatus {
        let stop_requested = async {
            if stop.await.is_err() {
                // The sender went away without asking: never stop.
                std::future::pending::<()>().await;
            }
        };
        let outcome = tokio::select! {
            outcome = self.monitored.wait() => outcome,
            () = stop_requested => self.stop().await,
        };
        self.status(outcome)
    }

    async fn stop(&mut self) -> Result<monitor::Outcome, monitor::MonitorError> {
        let patience = self.inner.settings.grace + STOP_MARGIN;
        stop(&mut self.monitored, patience, self.name.as_str()).await
    }

    fn status(&self, outcome: Result<monitor::Outcome, monitor::MonitorError>) -> ExitStatus {
        match outcome {
            Ok(monitor::Outcome::Exited { status, .. }) => status,
            Ok(monitor::Outcome::Unknown { .. }) => ExitStatus::Lost,
            Err(e) => {
                tracing::error!("{}: {e}", self.name);
                ExitStatus::Lost
            }
        }
    }
}

/// Has the monitor stop the tender; a monitor that has not reported the end
/// within `patience` (stopped, hung) is bypassed: the tender and the monitor
/// are killed, so a stop always ends.
pub(super) async fn stop(
    monitored: &mut monitor::Monitored,
    patience: Duration,
    name: &str,
) -> Result<monitor::Outcome, monitor::MonitorError> {
    if let Err(e) = monitored.stop() {
        tracing::warn!("{name}: {e}");
    }
    if let Ok(outcome) = tokio::time::timeout(patience, monitored.wait()).await {
        return outcome;
    }
    tracing::warn!(
        "{name}: the monitor did not end the run in time; killing the tender and the monitor"
    );
    monitored.kill()?;
    monitored.wait().await
}
