//! Flow control of binary streams: credit the receiver grants, per stream,
//! so that no stream outgrows the receiver's memory and a stalled one stalls
//! only its own sender.

use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// Why a binary stream cannot go on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("the stream was closed before all its data was sent")]
    Closed,
    #[error(
        "the peer sent {received} bytes on a stream it was granted only {granted} bytes of: \
         it ignores flow control"
    )]
    Overrun { granted: u64, received: u64 },
}

/// The sending side of a binary stream's flow control: how many bytes the
/// receiver has granted and how many were sent. A sender takes credit with
/// [`CreditWindow::reserve`] before each data frame; whatever reads the
/// receiver's `Credit` messages calls [`CreditWindow::grant`]. Each stream
/// has its own window, so a receiver that stops reading one stream stops
/// only that stream's sender. Shared between tasks behind an `Arc`.
#[derive(Debug, Default)]
pub struct CreditWindow {
    credit: Mutex<Credit>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Credit {
    granted: u64,
    sent: u64,
    closed: bool,
}

impl CreditWindow {
    /// A window with no credit: the receiver's first grant opens it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes up to `max` bytes of credit, waiting while there is none, and
    /// returns how many were taken (0 only when `max` is 0). The sender may
    /// then send that many bytes.
    pub async fn reserve(&self, max: usize) -> Result<usize, FlowError> {
        loop {
            // Registered before looking, so a grant in between still wakes us.
            let changed = self.changed.notified();
            {
                let mut credit = self.lock();
                if credit.closed {
                    return Err(FlowError::Closed);
                }
                let available = credit.granted - credit.sent;
                if available > 0 || max == 0 {
                    let taken = max.min(usize::try_from(available).unwrap_or(usize::MAX));
                    credit.sent += taken as u64;
                    return Ok(taken);
                }
            }
            changed.await;
        }
    }

    /// Adds the receiver's grant of `bytes` more.
    pub fn grant(&self, bytes: u64) {
        let mut credit = self.lock();
        // A peer granting absurd amounts only lifts its own limit.
        credit.granted = credit.granted.saturating_add(bytes);
        drop(credit);
        self.changed.notify_waiters();
    }

    /// Ends the stream: a sender waiting for credit, and any later reserve,
    /// gets [`FlowError::Closed`]. For a cancelled stream or a lost connection.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, Credit> {
        // The critical sections above cannot panic, so a poisoned lock's
        // state is still sound.
        self.credit.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiving side of a binary stream's flow control: decides when to
/// grant more, and catches a sender that overruns what it was granted.
///
/// Grants keep up to `window` bytes outstanding (granted and not consumed):
/// the first grant is the whole window, then whenever the outstanding bytes
/// fall to half the window it is topped up again. So the receiver never
/// holds more than `window` bytes of the stream, and a sender whose frames
/// are at most half the window never waits for a grant while the receiver
/// keeps up.
#[derive(Debug)]
pub struct ReceiveWindow {
    window: u64,
    granted: u64,
    received: u64,
    consumed: u64,
}

impl ReceiveWindow {
    pub fn new(window: u64) -> Self {
        Self {
            window,
            granted: 0,
            received: 0,
            consumed: 0,
        }
    }

    /// Counts `bytes` arriving on the stream.
    pub fn received(&mut self, bytes: u64) -> Result<(), FlowError> {
        self.received = self.received.saturating_add(bytes);
        if self.received > self.granted {
            return Err(FlowError::Overrun {
                granted: self.granted,
                received: self.received,
            });
        }
        Ok(())
    }

    /// Counts `bytes` the consumer is done with (written to disk, shown).
    pub fn consumed(&mut self, bytes: u64) {
        self.consumed = self.consumed.saturating_add(bytes);
    }

    /// The grant to send now, if one is due: call it when the stream opens
    /// and after each [`ReceiveWindow::consumed`].
    pub fn grant(&mut self) -> Option<u64> {
        let outstanding = self.granted.saturating_sub(self.consumed);
        if outstanding > self.window / 2 {
            return None;
        }
        let grant = self.window - outstanding;
        self.granted += grant;
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameWriter;
    use crate::wire::testing::connected;
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use tokio::io::AsyncWrite;
    use tokio::sync::mpsc;

    /// Polls once, without a runtime: is `future` ready right now?
    fn poll_now<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn reserve_takes_at_most_the_credit_and_waits_at_none() {
        let window = CreditWindow::new();
        let mut waiting = pin!(window.reserve(10));
        assert!(poll_now(waiting.as_mut()).is_pending(), "no credit yet");
        window.grant(4);
        assert_eq!(poll_now(waiting.as_mut()), Poll::Ready(Ok(4)));

        window.grant(25);
        assert_eq!(poll_now(pin!(window.reserve(10))), Poll::Ready(Ok(10)));
        assert_eq!(poll_now(pin!(window.reserve(100))), Poll::Ready(Ok(15)));
        assert!(poll_now(pin!(window.reserve(1))).is_pending());
        assert_eq!(poll_now(pin!(window.reserve(0))), Poll::Ready(Ok(0)));
    }

    #[test]
    fn closing_a_window_wakes_its_sender_with_an_error() {
        let window = CreditWindow::new();
        let mut waiting = pin!(window.reserve(10));
        assert!(poll_now(waiting.as_mut()).is_pending());
        window.close();
        assert_eq!(
            poll_now(waiting.as_mut()),
            Poll::Ready(Err(FlowError::Closed))
        );
        window.grant(10);
        assert_eq!(
            poll_now(pin!(window.reserve(1))),
            Poll::Ready(Err(FlowError::Closed))
        );
    }

    #[test]
    fn a_receiver_grants_the_window_then_tops_it_up_at_half() {
        let mut window = ReceiveWindow::new(100);
        assert_eq!(window.grant(), Some(100));
        assert_eq!(window.grant(), None, "granted once");
        window.received(100).unwrap();
        window.consumed(49);
        assert_eq!(window.grant(), None, "51 outstanding: more than half");
        window.consumed(1);
        assert_eq!(window.grant(), Some(50), "back to the whole window");
        window.received(50).unwrap();
        window.consumed(100);
        assert_eq!(window.grant(), Some(100));
    }

    #[test]
    fn a_sender_beyond_its_grant_is_caught() {
        let mut window = ReceiveWindow::new(100);
        window.grant();
        window.received(60).unwrap();
        assert_eq!(
            window.received(41),
            Err(FlowError::Overrun {
                granted: 100,
                received: 101
            })
        );
    }

    /// The tests' stand-in for the protocol's `Credit { bytes }` message.
    #[derive(Serialize, Deserialize)]
    struct Credit {
        bytes: u64,
    }

    const WINDOW: u64 = 64 << 10;
    const CHUNK: usize = 8 << 10;
    const STREAM_LEN: usize = 8 * WINDOW as usize;

    /// Sends stream `id` (STREAM_LEN bytes of `id`) chunk by chunk, taking
    /// credit before each.
    async fn send_stream<W: AsyncWrite + Unpin>(
        id: u64,
        window: Arc<CreditWindow>,
        writer: Arc<tokio::sync::Mutex<FrameWriter<W>>>,
    ) {
        let data = vec![id as u8; STREAM_LEN];
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = window.reserve(rest.len().min(CHUNK)).await.unwrap();
            let mut writer = writer.lock().await;
            writer.send_data(id, &rest[..n]).await.unwrap();
            writer.flush().await.unwrap();
            rest = &rest[n..];
        }
    }

    /// The receiver is done with `bytes` of stream `id`: grants more if due.
    fn release(
        id: u64,
        bytes: usize,
        window: &Mutex<ReceiveWindow>,
        grants: &mpsc::UnboundedSender<(u64, u64)>,
    ) {
        let grant = {
            let mut window = window.lock().unwrap();
            window.consumed(bytes as u64);
            window.grant()
        };
        if let Some(grant) = grant {
            grants.send((id, grant)).unwrap();
        }
    }

    /// Consumes stream `id` until `until` bytes have arrived in all, `got`
    /// included; returns the bytes.
    async fn consume(
        id: u64,
        queue: &mut mpsc::UnboundedReceiver<Bytes>,
        window: &Mutex<ReceiveWindow>,
        grants: &mpsc::UnboundedSender<(u64, u64)>,
        mut got: Vec<u8>,
        until: usize,
    ) -> Vec<u8> {
        while got.len() < until {
            let chunk = queue.recv().await.unwrap();
            got.extend_from_slice(&chunk);
            release(id, chunk.len(), window, grants);
        }
        got
    }

    #[tokio::test]
    async fn a_stalled_receiver_stalls_only_its_own_stream() {
        let ((mut sender_reader, sender_writer), (mut receiver_reader, mut receiver_writer)) =
            connected();

        // Sender end: two streams over one writer, credit messages in.
        let windows = [Arc::new(CreditWindow::new()), Arc::new(CreditWindow::new())];
        let credit_in = tokio::spawn({
            let windows = windows.clone();
            async move {
                while let Some(frame) = sender_reader.next().await.unwrap() {
                    windows[frame.id as usize].grant(frame.json::<Credit>().unwrap().bytes);
                }
            }
        });
        let writer = Arc::new(tokio::sync::Mutex::new(sender_writer));
        let senders = [0, 1].map(|id| {
            tokio::spawn(send_stream(
                id,
                windows[id as usize].clone(),
                writer.clone(),
            ))
        });
        drop(writer);

        // Receiver end: a dispatcher that checks every frame against its
        // stream's grants and queues it for the stream's consumer.
        let receive_windows = Arc::new([
            Mutex::new(ReceiveWindow::new(WINDOW)),
            Mutex::new(ReceiveWindow::new(WINDOW)),
        ]);
        let (grants, mut to_grant) = mpsc::unbounded_channel::<(u64, u64)>();
        let credit_out = tokio::spawn(async move {
            while let Some((id, bytes)) = to_grant.recv().await {
                receiver_writer
                    .send_json(id, &Credit { bytes })
                    .await
                    .unwrap();
                receiver_writer.flush().await.unwrap();
            }
        });
        let (queue_in, mut queues): (Vec<_>, Vec<_>) =
            (0..2).map(|_| mpsc::unbounded_channel::<Bytes>()).unzip();
        let dispatcher = tokio::spawn({
            let receive_windows = receive_windows.clone();
            async move {
                while let Some(frame) = receiver_reader.next().await.unwrap() {
                    let id = frame.id as usize;
                    receive_windows[id]
                        .lock()
                        .unwrap()
                        .received(frame.payload.len() as u64)
                        .unwrap();
                    queue_in[id].send(frame.payload).unwrap();
                }
            }
        });
        for (id, window) in receive_windows.iter().enumerate() {
            let grant = window.lock().unwrap().grant().unwrap();
            grants.send((id as u64, grant)).unwrap();
        }

        // Stream 0's consumer stalls; stream 1 runs to its end regardless.
        let stream1 = consume(
            1,
            &mut queues[1],
            &receive_windows[1],
            &grants,
            vec![],
            STREAM_LEN,
        );
        assert_eq!(stream1.await, vec![1; STREAM_LEN]);
        let mut held = Vec::new();
        while let Ok(chunk) = queues[0].try_recv() {
            held.extend_from_slice(&chunk);
        }
        assert!(
            held.len() as u64 <= WINDOW,
            "stream 0 sent {} bytes",
            held.len()
        );
        assert!(!senders[0].is_finished(), "stream 0 waits for credit");

        // Once its consumer resumes, stream 0 completes too.
        release(0, held.len(), &receive_windows[0], &grants);
        let stream0 = consume(
            0,
            &mut queues[0],
            &receive_windows[0],
            &grants,
            held,
            STREAM_LEN,
        );
        assert_eq!(stream0.await, vec![0; STREAM_LEN]);
        for sender in senders {
            sender.await.unwrap();
        }
        // Every byte passed the dispatcher's overrun check.
        assert!(!dispatcher.is_finished(), "the dispatcher is still reading");
        for task in [dispatcher, credit_in, credit_out] {
            task.abort();
        }
    }
}
