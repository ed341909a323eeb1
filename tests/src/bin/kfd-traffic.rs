//! Test client for the demo: sends UDP from a source address in one network
//! namespace to a receiver in another and reports what arrived.
//!
//! `kfd-traffic FROM_NETNS TO_NETNS SRC DST COUNT`

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use kfd_tests::{Receiver, reconciler::kernel::netns::netns_path, send};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to, src, dst, count] = args.as_slice() else {
        eprintln!("usage: kfd-traffic FROM_NETNS TO_NETNS SRC DST COUNT");
        return ExitCode::from(2);
    };
    let (Ok(src), Ok(dst), Ok(count)) = (
        src.parse::<IpAddr>(),
        dst.parse::<IpAddr>(),
        count.parse::<u32>(),
    ) else {
        eprintln!("kfd-traffic: SRC and DST must be addresses, COUNT a number");
        return ExitCode::from(2);
    };
    let rx = Receiver::start(netns_path(to));
    let sent = send(&netns_path(from), src, dst, count);
    let got = rx.wait_for(&src.to_string(), sent as usize, Duration::from_millis(500));
    println!("from {src:<16} sent {sent:>5}  received {got:>5}");
    ExitCode::SUCCESS
}
