//! The HTTP server's limits, tested as the attacks: a client that never finishes its
//! headers, one that stops half-way through its body, more connections than the cap, and
//! clients holding connections while the relay is asked to stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// The relay's bound on a request head (`serve::HEADER_READ`), with slack.
const HEADER_READ_AND_SLACK: Duration = Duration::from_secs(15);

/// Whether the relay closed `stream` within `within` (a read sees EOF or a reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) => {
                return !matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    let mut slow = TcpStream::connect(relay.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut idle = TcpStream::connect(relay.addr).unwrap();
    let start = Instant::now();
    assert!(
        closed_within(&mut slow, HEADER_READ_AND_SLACK),
        "half-sent headers held on"
    );
    assert!(
        closed_within(&mut idle, HEADER_READ_AND_SLACK),
        "an idle connection held on"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "cut off too soon"
    );
}

#[test]
fn a_body_that_stops_half_way_is_answered_408() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let mut slow = TcpStream::connect(relay.addr).unwrap();
    slow.write_all(
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"conv",
    )
    .unwrap();
    slow.set_read_timeout(Some(HEADER_READ_AND_SLACK)).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn connections_past_the_cap_are_refused_at_once_and_the_relay_keeps_working() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    // 128 is the cap (or a quarter of the descriptor limit, if fewer).
    let held: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(relay.addr).unwrap())
        .collect();
    let mut extra: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(relay.addr).unwrap())
        .collect();
    let refused = extra
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_secs(3)))
        .filter(|closed| *closed)
        .count();
    assert!(
        refused >= 1,
        "past the cap, connections queue instead of being refused"
    );
    drop(held);
    drop(extra);
    wait_for("the relay to take connections again", SOON, || {
        let mut probe = TcpStream::connect(relay.addr).ok()?;
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        probe.read_to_string(&mut answer).ok()?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
    // Jobs and their completions go on meanwhile, and the API answers again.
    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec echo still-serving"));
    rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
}

#[test]
fn sigterm_exits_within_its_bound_whatever_clients_hold_open() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &[]);
    let mut half_sent = TcpStream::connect(relay.addr).unwrap();
    half_sent
        .write_all(b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{")
        .unwrap();
    let _idle = TcpStream::connect(relay.addr).unwrap();
    // One that was answered and keeps the connection alive, reading nothing more.
    let mut kept = TcpStream::connect(relay.addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    // And a body that arrives a byte at a time, for ever.
    let mut trickle = TcpStream::connect(relay.addr).unwrap();
    trickle
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{")
        .unwrap();
    let dripping = std::thread::spawn(move || {
        for _ in 0..300 {
            if trickle.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let start = Instant::now();
    let status = relay.terminate(SOON);
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "the stop waited {:?} for clients",
        start.elapsed()
    );
    dripping.join().unwrap();
}
