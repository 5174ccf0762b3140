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
//!
//! Whoever can write the Lease names the leader, so a follower forwards
//! only to an address that is a ready endpoint of the aggregator's own
//! Service, and never to itself ([`Guard`], the review's S19): a forged
//! holder identity cannot steer agents' tokens elsewhere, nor make a
//! follower forward to itself in a loop.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use crate::leader::Role;

/// Give up on reaching the leader after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Accepted local connections waiting for the gRPC server.
const LOCAL_QUEUE: usize = 64;

/// Where a follower may forward: the ready endpoints of the aggregator's
/// Service (`ready`, kept by [`watch_endpoints`]), never `own`.
#[derive(Debug, Clone)]
pub struct Guard {
    pub own: IpAddr,
    pub ready: watch::Receiver<BTreeSet<IpAddr>>,
}

impl Guard {
    /// Why a connection may not go to `leader`, if it may not.
    fn refuses(&self, leader: IpAddr) -> Option<&'static str> {
        if leader == self.own {
            Some("the lease names this replica's own address")
        } else if !self.ready.borrow().contains(&leader) {
            Some(
                "the lease names an address that is not a ready endpoint of the aggregator's Service",
            )
        } else {
            None
        }
    }
}

/// Keep the ready addresses of Service `service`'s EndpointSlices in
/// `namespace` (needs `list` and `watch` on endpointslices there). An
/// endpoint whose `ready` condition is unset counts as ready, as the API
/// says it should.
pub fn watch_endpoints(
    client: kube::Client,
    namespace: &str,
    service: &str,
) -> watch::Receiver<BTreeSet<IpAddr>> {
    use futures_util::StreamExt;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (tx, rx) = watch::channel(BTreeSet::new());
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, namespace);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                warn!(error = %e, "watching the aggregator's EndpointSlices failed; retrying");
                continue;
            }
            let ready: BTreeSet<IpAddr> = store
                .state()
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .flat_map(|e| e.addresses.iter())
                .filter_map(|a| a.parse().ok())
                .collect();
            tx.send_if_modified(|old| {
                let changed = *old != ready;
                *old = ready;
                changed
            });
        }
    });
    rx
}

/// Accept on `listener` and route every connection by `role`; the stream
/// yields the connections to serve here. A follower forwards only where
/// `guard` allows (always without one: a single replica has no followers).
/// Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    role: watch::Receiver<Role>,
    guard: Option<Guard>,
) -> ReceiverStream<std::io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(LOCAL_QUEUE);
    tokio::spawn(async move {
        let mut refusals = crate::refusals::RefusalLog::default();
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
                    if let Some(why) = guard.as_ref().and_then(|g| g.refuses(leader)) {
                        if refusals.should_log(&leader.to_string(), "forward", Instant::now()) {
                            warn!(%leader, why, "not forwarding to the lease holder; closing connections until it is a ready endpoint");
                        }
                        drop(stream);
                        continue;
                    }
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
