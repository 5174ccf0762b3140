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
                    // Per-connection errors (e.g. reset before accept): go
                    // on, after a pause so that a lasting one (out of file
                    // descriptors) does not spin a core.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(netaware_common::observe::ACCEPT_BACKOFF).await;
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
mod tests;
