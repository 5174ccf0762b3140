//! Every packet the ICMP socket receives, as a raw socket (with the IPv4
//! header) and as a ping socket (without).
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use netaware_agent::icmp::parse_echo_reply;

fuzz_target!(|data: &[u8]| {
    let from = Ipv4Addr::new(192, 0, 2, 1);
    let _ = parse_echo_reply(data, true, from);
    let _ = parse_echo_reply(data, false, from);
});
