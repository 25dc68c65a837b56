//! The Hellos every connection starts with: each end says which protocol it
//! speaks, and a mismatch, or a peer that is no fulmar, is told to the
//! operator before anything else is sent.

use super::{FrameError, FrameReader, FrameWriter, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Who this build is, as its Hello names it.
pub const SOFTWARE: &str = concat!("fulmar ", env!("CARGO_PKG_VERSION"));
/// How much of a peer's bytes an error message quotes.
const QUOTE_LEN: usize = 64;

/// The first frame each way: a JSON frame with id 0. Its shape never
/// changes between protocol versions, so any two fulmars can tell that
/// they disagree.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u32,
    /// Who is talking, for messages: e.g. "fulmar 0.1.0".
    #[serde(default)]
    pub software: String,
}

impl Hello {
    /// This build's Hello.
    pub fn ours(software: &str) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            software: software.to_owned(),
        }
    }
}

/// The other end of a connection, as error messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Daemon,
    Client,
}

impl Peer {
    /// How this end calls itself when talking to `self`.
    fn us(self) -> &'static str {
        match self {
            Self::Daemon => "this fulmar",
            Self::Client => "this daemon",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Daemon => "the daemon",
            Self::Client => "the client",
        })
    }
}

/// Why a connection did not get past its Hellos.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{}", mismatch(*.peer, .hello, *.ours))]
    VersionMismatch { peer: Peer, hello: Hello, ours: u32 },
    #[error("{peer} did not start with a fulmar Hello but sent {received}: {}", not_fulmar_hint(*.peer))]
    NotFulmar {
        peer: Peer,
        /// The start of what it sent, quoted and escaped.
        received: String,
    },
    #[error(
        "{peer} closed the connection before its Hello: check that the other end is \
         a fulmar daemon or `fulmar proxy` and that it runs"
    )]
    Closed { peer: Peer },
    #[error(
        "{peer} sent no Hello within {after:?} (received so far: {received}): check that the other \
         end is a fulmar daemon or `fulmar proxy` and that it is not stuck"
    )]
    Timeout {
        peer: Peer,
        after: Duration,
        received: String,
    },
    #[error("the connection failed during the handshake: {0}")]
    Connection(#[source] FrameError),
}

fn mismatch(peer: Peer, hello: &Hello, ours: u32) -> String {
    let older = if hello.protocol < ours {
        peer.to_string()
    } else {
        peer.us().to_owned()
    };
    format!(
        "{peer} ({}) speaks protocol {} and {} speaks {ours}: run the same fulmar version \
         on both ends (upgrade {older}, the older one)",
        quote(hello.software.as_bytes()),
        hello.protocol,
        peer.us(),
    )
}

fn not_fulmar_hint(peer: Peer) -> &'static str {
    match peer {
        Peer::Daemon => {
            "check that the socket is a fulmar daemon's and, through ssh, that the remote \
             login prints nothing on stdout (no banner or echo in shell start-up files)"
        }
        Peer::Client => "it is not a fulmar client",
    }
}

/// The start of a peer's bytes, safe to print: quoted, control characters escaped.
fn quote(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE_LEN)]);
    let more = if bytes.len() > QUOTE_LEN { "..." } else { "" };
    format!("{shown:?}{more}")
}

/// Opens a connection, on either end: exchanges Hellos with `peer`, the
/// other end, and waits at most `timeout` for its. The client speaks first;
/// the daemon answers any well-formed Hello, also one of another version, so
/// that the client can tell the operator which end to upgrade. Returns the
/// peer's Hello.
pub async fn handshake<R, W>(
    peer: Peer,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    ours: &Hello,
    timeout: Duration,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    // Talking to the daemon, we are the client.
    let speaks_first = peer == Peer::Daemon;
    let exchange = async {
        if speaks_first {
            send_hello(writer, ours).await?;
        }
        let theirs = read_hello(peer, reader).await?;
        if !speaks_first {
            send_hello(writer, ours).await?;
        }
        if theirs.protocol != ours.protocol {
            return Err(HandshakeError::VersionMismatch {
                peer,
                hello: theirs,
                ours: ours.protocol,
            });
        }
        Ok(theirs)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Err(HandshakeError::Timeout {
            peer,
            after: timeout,
            received: match reader.buffered() {
                [] => "nothing".to_owned(),
                bytes => quote(bytes),
            },
        }),
    }
}

async fn send_hello<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    hello: &Hello,
) -> Result<(), HandshakeError> {
    writer
        .send_json(0, hello)
        .await
        .map_err(HandshakeError::Connection)?;
    writer.flush().await.map_err(HandshakeError::Connection)
}

async fn read_hello<R: AsyncRead + Unpin + 'static>(
    peer: Peer,
    reader: &mut FrameReader<R>,
) -> Result<Hello, HandshakeError> {
    let frame = match reader.next().await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(HandshakeError::Closed { peer }),
        Err(error @ FrameError::Io(_)) => return Err(HandshakeError::Connection(error)),
        // Text is never a frame: its first byte makes a length over the limit.
        Err(_) => {
            return Err(HandshakeError::NotFulmar {
                peer,
                received: quote(reader.buffered()),
            });
        }
    };
    frame.json().map_err(|_| HandshakeError::NotFulmar {
        peer,
        received: quote(&frame.payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HANDSHAKE_TIMEOUT;
    use crate::wire::testing::{Ends, connected};
    use tokio::io::{AsyncWriteExt, duplex};

    fn hello(protocol: u32, software: &str) -> Hello {
        Hello {
            protocol,
            software: software.into(),
        }
    }

    #[tokio::test]
    async fn a_handshake_gives_each_end_the_others_hello() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = connected();
        let (client, daemon) = (Hello::ours("fulmar client"), Hello::ours("fulmar daemon"));
        let (client, server) = tokio::join!(
            handshake(Peer::Daemon, &mut cr, &mut cw, &client, HANDSHAKE_TIMEOUT),
            handshake(Peer::Client, &mut sr, &mut sw, &daemon, HANDSHAKE_TIMEOUT),
        );
        assert_eq!(client.unwrap(), hello(PROTOCOL_VERSION, "fulmar daemon"));
        assert_eq!(server.unwrap(), hello(PROTOCOL_VERSION, "fulmar client"));

        // The connection carries frames afterwards.
        cw.send_json(1, "list").await.unwrap();
        cw.flush().await.unwrap();
        assert_eq!(
            sr.next().await.unwrap().unwrap().json::<String>().unwrap(),
            "list"
        );
    }

    /// Runs a handshake between a client speaking `client` and a daemon
    /// speaking `daemon`, with the real code on both ends.
    async fn mismatched(
        client: u32,
        daemon: u32,
    ) -> (Result<Hello, HandshakeError>, Result<Hello, HandshakeError>) {
        let ((mut cr, mut cw), (mut sr, mut sw)) = connected();
        let (client, daemon) = (hello(client, "fulmar x"), hello(daemon, "fulmar x"));
        tokio::join!(
            handshake(Peer::Daemon, &mut cr, &mut cw, &client, HANDSHAKE_TIMEOUT),
            handshake(Peer::Client, &mut sr, &mut sw, &daemon, HANDSHAKE_TIMEOUT),
        )
    }

    #[tokio::test]
    async fn a_newer_daemon_is_reported_on_both_ends() {
        let (client, server) = mismatched(1, 2).await;
        let client = client.unwrap_err();
        assert!(
            matches!(&client, HandshakeError::VersionMismatch { peer: Peer::Daemon, hello, ours: 1 } if hello.protocol == 2)
        );
        assert_eq!(
            client.to_string(),
            "the daemon (\"fulmar x\") speaks protocol 2 and this fulmar speaks 1: run the same \
             fulmar version on both ends (upgrade this fulmar, the older one)"
        );
        let server = server.unwrap_err();
        assert!(
            matches!(&server, HandshakeError::VersionMismatch { peer: Peer::Client, hello, ours: 2 } if hello.protocol == 1)
        );
        assert_eq!(
            server.to_string(),
            "the client (\"fulmar x\") speaks protocol 1 and this daemon speaks 2: run the same \
             fulmar version on both ends (upgrade the client, the older one)"
        );
    }

    /// A client of protocol 2, from before console lines left JSON arrays,
    /// is told what to do by its own code, which reads this Hello as ever.
    #[tokio::test]
    async fn a_protocol_2_client_is_told_to_upgrade() {
        let (client, server) = mismatched(2, PROTOCOL_VERSION).await;
        assert_eq!(
            client.unwrap_err().to_string(),
            "the daemon (\"fulmar x\") speaks protocol 3 and this fulmar speaks 2: run the same \
             fulmar version on both ends (upgrade this fulmar, the older one)"
        );
        assert!(
            server
                .unwrap_err()
                .to_string()
                .ends_with("(upgrade the client, the older one)")
        );
    }

    #[tokio::test]
    async fn a_newer_client_is_reported_on_both_ends() {
        let (client, server) = mismatched(3, 1).await;
        assert!(
            client
                .unwrap_err()
                .to_string()
                .ends_with("(upgrade the daemon, the older one)")
        );
        assert!(
            server.unwrap_err().to_string().starts_with(
                "the client (\"fulmar x\") speaks protocol 3 and this daemon speaks 1"
            )
        );
    }

    /// Framed ends for the side under test, and its peer as a raw stream.
    fn against_raw() -> (Ends, tokio::io::DuplexStream) {
        let (framed, raw) = duplex(64 << 10);
        let (read, write) = tokio::io::split(framed);
        ((FrameReader::new(read), FrameWriter::new(write)), raw)
    }

    #[tokio::test]
    async fn a_daemon_told_garbage_says_so_at_once() {
        let ((mut sr, mut sw), mut http) = against_raw();
        // The HTTP client stays connected: only its bytes can end the wait.
        http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let refused = handshake(
            Peer::Client,
            &mut sr,
            &mut sw,
            &Hello::ours("fulmar"),
            HANDSHAKE_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&refused, HandshakeError::NotFulmar { peer: Peer::Client, received }
                if received.starts_with("\"GET / HTTP/1.1\\r\\nHost")),
            "{refused:?}"
        );
        drop(http);
    }

    #[tokio::test]
    async fn a_client_reading_a_login_banner_says_so_at_once() {
        let ((mut cr, mut cw), mut proxy) = against_raw();
        // What a chatty .bashrc puts in front of `fulmar proxy`'s output.
        proxy.write_all(b"Welcome to host7\n").await.unwrap();
        let refused = handshake(
            Peer::Daemon,
            &mut cr,
            &mut cw,
            &Hello::ours("fulmar"),
            HANDSHAKE_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &refused,
                HandshakeError::NotFulmar {
                    peer: Peer::Daemon,
                    ..
                }
            ),
            "{refused:?}"
        );
        let message = refused.to_string();
        assert!(message.contains("\"Welcome to host7\\n\""), "{message}");
        assert!(message.contains("prints nothing on stdout"), "{message}");
        drop(proxy);
    }

    #[tokio::test]
    async fn a_frame_that_is_not_a_hello_is_refused_without_an_answer() {
        let ((mut sr, mut sw), client) = against_raw();
        let (client_read, client_write) = tokio::io::split(client);
        let mut cw = FrameWriter::new(client_write);
        cw.send_json(0, &serde_json::json!({ "list": {} }))
            .await
            .unwrap();
        cw.flush().await.unwrap();
        let refused = handshake(
            Peer::Client,
            &mut sr,
            &mut sw,
            &Hello::ours("fulmar"),
            HANDSHAKE_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&refused, HandshakeError::NotFulmar { received, .. } if received.contains("list")),
            "{refused:?}"
        );
        drop((sr, sw));
        assert_eq!(FrameReader::new(client_read).next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_with_what_it_sent() {
        let ((mut cr, mut cw), mut daemon) = against_raw();
        daemon.write_all(b"hi").await.unwrap();
        let timeout = Duration::from_millis(50);
        let refused = handshake(
            Peer::Daemon,
            &mut cr,
            &mut cw,
            &Hello::ours("fulmar"),
            timeout,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&refused, HandshakeError::Timeout { peer: Peer::Daemon, after, received }
                if *after == timeout && received == "\"hi\""),
            "{refused:?}"
        );
        drop(daemon);
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_before_hello_is_reported() {
        // The daemon reads before it writes, so it sees the end, not a failed write.
        let ((mut sr, mut sw), client) = against_raw();
        drop(client);
        let refused = handshake(
            Peer::Client,
            &mut sr,
            &mut sw,
            &Hello::ours("fulmar"),
            HANDSHAKE_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(refused, HandshakeError::Closed { peer: Peer::Client }),
            "{refused:?}"
        );
    }
}
