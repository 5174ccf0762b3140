//! Kernel receive timestamps (`SO_TIMESTAMPNS`) on UDP sockets.
//!
//! A timestamp taken in userspace after the task wakes up includes the
//! scheduler's wake-up latency (tens of µs on a VM), which would inflate
//! every RTT. The kernel stamps the packet when it arrives; we turn that into
//! an *age* (wall clock now − kernel stamp, both realtime) and subtract the age
//! from our monotonic `now`, so the result stays on the monotonic clock.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::clock::Clock;

/// Ask the kernel to stamp every received packet.
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// Arrival on the agent's monotonic clock (kernel time when available,
    /// otherwise the moment the task woke up).
    pub at: Duration,
    /// Whether `at` comes from a kernel timestamp.
    pub kernel: bool,
}

/// Receive one datagram with its arrival time.
pub async fn recv(socket: &UdpSocket, buf: &mut [u8], clock: &Clock) -> io::Result<Received> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || recv_now(socket, buf, clock)) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn recv_now(socket: &UdpSocket, buf: &mut [u8], clock: &Clock) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    // Read both clocks together, as close to the syscall as possible.
    let mono_now = clock.now();
    let wall_now = SystemTime::now();
    let mut stamp = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            stamp = Some(ts);
        }
    }
    let from = msg
        .address
        .and_then(|a: SockaddrStorage| to_socket_addr(&a));
    let len = msg.bytes;
    let age = stamp.and_then(|ts| {
        let kernel = UNIX_EPOCH
            + Duration::new(
                u64::try_from(ts.tv_sec()).ok()?,
                u32::try_from(ts.tv_nsec()).ok()?,
            );
        wall_now.duration_since(kernel).ok()
    });
    Ok(Received {
        len,
        from,
        at: age.map_or(mono_now, |a| mono_now.saturating_sub(a)),
        kernel: age.is_some(),
    })
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kernel_timestamps_arrive_and_are_not_in_the_future() {
        let clock = Clock::new();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent_at = clock.now();
        tx.send_to(b"hello", rx.local_addr().unwrap())
            .await
            .unwrap();
        // Let the packet wait in the socket: the kernel stamp must predate our wake-up.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut buf = [0u8; 64];
        let r = recv(&rx, &mut buf, &clock).await.unwrap();
        let woke = clock.now();
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.from, Some(tx.local_addr().unwrap()));
        assert!(r.kernel, "SO_TIMESTAMPNS gave no timestamp");
        assert!(r.at >= sent_at, "stamped before it was sent");
        assert!(
            woke - r.at >= Duration::from_millis(15),
            "stamp is the arrival, not the read"
        );
    }
}
