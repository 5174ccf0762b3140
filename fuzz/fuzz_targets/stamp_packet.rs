//! Every datagram the STAMP reflector and sender receive: the packet
//! decoders, and the reflector's guard deciding whether to answer (a
//! source address and port taken from the input).
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use netaware_agent::reflector::{Guard, Limits};
use netaware_agent::stamp;

fuzz_target!(|data: &[u8]| {
    let _ = stamp::is_sender_packet(data);
    let _ = stamp::decode_sender(data);
    let _ = stamp::decode_reflector(data);
    if data.len() >= 6 {
        let ip = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
        let port = u16::from_be_bytes([data[4], data[5]]);
        let now = tokio::time::Instant::now();
        let local = SocketAddr::from(([127, 0, 0, 1], 8620));
        let limits = Limits {
            per_source_pps: 100.0,
            total_pps: 2000.0,
        };
        let mut guard = Guard::new(local, 8620, limits, now);
        let _ = guard.check(SocketAddr::from((ip, port)), &data[6..], now);
    }
});
