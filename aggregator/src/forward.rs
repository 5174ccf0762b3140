//! Where an accepted connection goes, by this replica's [`Role`]:
//!
//! - leader (or the only replica): to the local gRPC server;
//! - follower that knows the leader: forwarded byte for byte to the same
//!   port on the leader's IP (TCP level, so agent sessions, queries and
//!   watch streams all work unchanged, and TLS would pass through);
//! - follower that knows no leader: closed, and the client retries.
//!
//! A forwarded connection is cut as soon as its target stops being the
//! leader, so the client reconnects and reaches the new one: data never
//! keeps flowing to a replica that no longer leads.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use crate::leader::Role;

/// Give up on reaching the leader after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Accepted local connections waiting for the gRPC server.
const LOCAL_QUEUE: usize = 64;

/// Accept on `listener` and route every connection by `role`; the stream
/// yields the connections to serve here. Accepting stops when the stream
/// is dropped.
pub fn incoming(
    listener: TcpListener,
    role: watch::Receiver<Role>,
) -> ReceiverStream<std::io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(LOCAL_QUEUE);
    tokio::spawn(async move {
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection errors (e.g. reset before accept): go on.
                    debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let current = *role.borrow();
            match current {
                Role::Leader => {
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                Role::Follower {
                    leader: Some(leader),
                } => {
                    let target = SocketAddr::new(leader, port);
                    debug!(%peer, %target, "forwarding to the leader");
                    tokio::spawn(forward(stream, target, role.clone()));
                }
                Role::Follower { leader: None } => {
                    debug!(%peer, "no leader to forward to; closing");
                    drop(stream);
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Copy both ways between `client` and `target` until either side closes
/// or `target` stops being the leader.
async fn forward(mut client: TcpStream, target: SocketAddr, mut role: watch::Receiver<Role>) {
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%target, error = %e, "cannot reach the leader");
            return;
        }
        Err(_) => {
            warn!(%target, "connecting to the leader timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let still_leader = |r: &Role| {
        *r == Role::Follower {
            leader: Some(target.ip()),
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                debug!(%target, error = %e, "forwarded connection ended");
            }
        }
        _ = role.wait_for(|r| !still_leader(r)) => {
            debug!(%target, "leader changed; cutting the forwarded connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    /// A listener on 127.0.0.1 and one on 127.0.0.2 with the same port:
    /// two "replicas" on one machine.
    async fn pair() -> (TcpListener, TcpListener) {
        loop {
            let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = a.local_addr().unwrap().port();
            if let Ok(b) = TcpListener::bind(("127.0.0.2", port)).await {
                return (a, b);
            }
        }
    }

    /// Echo every byte back, on the connections `incoming` yields.
    fn echo(mut local: ReceiverStream<std::io::Result<TcpStream>>) {
        tokio::spawn(async move {
            while let Some(Ok(mut s)) = local.next().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    }

    async fn round_trip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(msg).await?;
        let mut buf = vec![0; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .map_err(std::io::Error::other)??;
        Ok(buf)
    }

    #[tokio::test]
    async fn the_leader_serves_and_a_follower_forwards_to_it() {
        let (leader_l, follower_l) = pair().await;
        let leader_addr = leader_l.local_addr().unwrap();
        let follower_addr = follower_l.local_addr().unwrap();
        let (_leader_role, leader_rx) = watch::channel(Role::Leader);
        echo(incoming(leader_l, leader_rx));
        let (_f_role, f_rx) = watch::channel(Role::Follower {
            leader: Some(leader_addr.ip()),
        });
        let mut follower_local = incoming(follower_l, f_rx);
        assert_eq!(round_trip(leader_addr, b"direct").await.unwrap(), b"direct");
        assert_eq!(
            round_trip(follower_addr, b"through the follower")
                .await
                .unwrap(),
            b"through the follower"
        );
        // The follower served nothing itself.
        let own = tokio::time::timeout(Duration::from_millis(100), follower_local.next()).await;
        assert!(own.is_err(), "a follower must not serve locally");
    }

    #[tokio::test]
    async fn with_no_leader_a_follower_closes_connections() {
        let (_, l) = pair().await;
        let addr = l.local_addr().unwrap();
        let (_role, rx) = watch::channel(Role::Follower { leader: None });
        let _local = incoming(l, rx);
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection must be closed");
    }

    #[tokio::test]
    async fn a_forwarded_connection_is_cut_when_the_leader_changes() {
        let (leader_l, follower_l) = pair().await;
        let leader_addr = leader_l.local_addr().unwrap();
        let (_leader_role, leader_rx) = watch::channel(Role::Leader);
        echo(incoming(leader_l, leader_rx));
        let (f_role, f_rx) = watch::channel(Role::Follower {
            leader: Some(leader_addr.ip()),
        });
        let _f_local = incoming(follower_l, f_rx);
        let follower_addr = SocketAddr::new("127.0.0.2".parse().unwrap(), leader_addr.port());
        let mut s = TcpStream::connect(follower_addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // The follower itself becomes the leader: the old path is cut.
        f_role.send_replace(Role::Leader);
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the forwarded connection must be closed");
    }
}
