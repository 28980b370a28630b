//! Ring hop latency between two processes.
//!
//! `cargo bench --bench ring`: this program starts a copy of itself as the
//! peer (as the executive is a separate process), which maps the same
//! segment and echoes every token-ring message back on the activation ring.
//! One hop = from the sender's timestamp before publishing to the
//! receiver's timestamp after the message is visible (both on
//! CLOCK_MONOTONIC); the round trip is printed too. Payloads of 4 KiB and
//! 16 KiB; HYBRID_BENCH_ITERS messages each (default 20000), after 1000
//! warm-up messages.

use std::time::Duration;

use hybrid_tui::ring::wait::mono_ns;
use hybrid_tui::ring::{RingId, Segment, SegmentSpec, SlotHeader, dtype, kind};

const PEER_ENV: &str = "HYBRID_RING_BENCH_PEER";

fn peer(name: &str) {
    let seg = Segment::open(name).expect("open segment");
    let mut rx = seg.consumer(RingId::Tokens);
    let mut tx = seg.producer(RingId::Activations);
    loop {
        let Some(m) = rx.recv(Duration::from_secs(30)).expect("recv") else {
            return;
        };
        let seen = mono_ns();
        let h = m.header;
        if h.count == u32::MAX {
            return;
        }
        let payload = m.payload().to_vec();
        drop(m);
        let reply = SlotHeader {
            kind: kind::ACTIVATIONS,
            t_start_ns: seen,
            ..h
        };
        tx.send(reply, &payload, Duration::from_secs(30))
            .expect("send");
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    if let Ok(name) = std::env::var(PEER_ENV) {
        peer(&name);
        return;
    }
    let iters: usize = std::env::var("HYBRID_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seg = Segment::create(&SegmentSpec {
        token_slots: 8,
        token_slot_bytes: 16384,
        act_slots: 8,
        act_slot_bytes: 16384,
    })
    .expect("segment");
    let exe = std::env::current_exe().expect("exe");
    let mut child = std::process::Command::new(exe)
        .env(PEER_ENV, seg.name())
        .spawn()
        .expect("peer");
    let mut tx = seg.producer(RingId::Tokens);
    let mut rx = seg.consumer(RingId::Activations);
    println!(
        "ring hop latency, two processes, {} cores, {iters} messages per size",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "payload", "hop p50 µs", "hop p99 µs", "hop max µs", "round p50 µs", "round p99 µs"
    );
    for size in [4096usize, 16384] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let mut hops = Vec::with_capacity(iters);
        let mut rounds = Vec::with_capacity(iters);
        for i in 0..iters + 1000 {
            let t0 = mono_ns();
            let h = SlotHeader {
                kind: kind::TOKENS,
                dtype: dtype::U32,
                count: 1,
                request: i as u64,
                t_submit_ns: t0,
                ..Default::default()
            };
            assert!(tx.send(h, &payload, Duration::from_secs(10)).expect("send"));
            let m = rx
                .recv(Duration::from_secs(10))
                .expect("recv")
                .expect("peer answered");
            let t1 = mono_ns();
            assert_eq!(m.header.request, i as u64);
            assert_eq!(m.payload().len(), size);
            if i >= 1000 {
                hops.push((m.header.t_start_ns - m.header.t_submit_ns) as f64 / 1e3);
                rounds.push((t1 - t0) as f64 / 1e3);
            }
        }
        println!(
            "{:>6}KiB {:>12.2} {:>12.2} {:>12.2} {:>14.2} {:>14.2}",
            size / 1024,
            pct(&mut hops, 0.5),
            pct(&mut hops, 0.99),
            pct(&mut hops, 1.0),
            pct(&mut rounds, 0.5),
            pct(&mut rounds, 0.99)
        );
    }
    let stats = seg.stats();
    println!(
        "token ring: {} messages, {} bytes, high water {}/{}; activation ring: {} messages",
        stats[0].messages, stats[0].bytes, stats[0].high_water, stats[0].slots, stats[1].messages
    );
    let stop = SlotHeader {
        kind: kind::TOKENS,
        count: u32::MAX,
        ..Default::default()
    };
    let _ = tx.send(stop, &[], Duration::from_secs(1));
    let _ = child.wait();
}
