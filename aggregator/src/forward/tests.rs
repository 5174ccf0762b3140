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
    echo(incoming(leader_l, leader_rx, None));
    let (_f_role, f_rx) = watch::channel(Role::Follower {
        leader: Some(leader_addr.ip()),
    });
    let mut follower_local = incoming(follower_l, f_rx, None);
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
    let _local = incoming(l, rx, None);
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
    echo(incoming(leader_l, leader_rx, None));
    let (f_role, f_rx) = watch::channel(Role::Follower {
        leader: Some(leader_addr.ip()),
    });
    let _f_local = incoming(follower_l, f_rx, None);
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

/// A follower whose lease names an address that is not a ready endpoint of
/// the Service (a forged Lease), or its own, closes connections instead of
/// forwarding; once the address is a ready endpoint it forwards.
#[tokio::test]
async fn a_follower_forwards_only_to_a_ready_endpoint_not_itself() {
    let (leader_l, follower_l) = pair().await;
    let leader_addr = leader_l.local_addr().unwrap();
    let follower_addr = follower_l.local_addr().unwrap();
    let (_leader_role, leader_rx) = watch::channel(Role::Leader);
    echo(incoming(leader_l, leader_rx, None));
    let (ready_tx, ready) = watch::channel(BTreeSet::new());
    let guard = Guard {
        own: follower_addr.ip(),
        ready,
    };
    let (f_role, f_rx) = watch::channel(Role::Follower {
        leader: Some(leader_addr.ip()),
    });
    let _local = incoming(follower_l, f_rx, Some(guard));
    assert!(
        round_trip(follower_addr, b"x").await.is_err(),
        "forwarded to an address that is no ready endpoint"
    );
    // Itself named as the leader, even as a ready endpoint: no loop.
    ready_tx.send_replace([follower_addr.ip()].into());
    f_role.send_replace(Role::Follower {
        leader: Some(follower_addr.ip()),
    });
    assert!(
        round_trip(follower_addr, b"x").await.is_err(),
        "forwarded to itself"
    );
    ready_tx.send_replace([leader_addr.ip(), follower_addr.ip()].into());
    f_role.send_replace(Role::Follower {
        leader: Some(leader_addr.ip()),
    });
    assert_eq!(round_trip(follower_addr, b"ok").await.unwrap(), b"ok");
}
