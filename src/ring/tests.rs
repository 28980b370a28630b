use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::segment::list_segments;
use super::*;

fn spec(slots: u32, bytes: usize) -> SegmentSpec {
    SegmentSpec {
        token_slots: slots,
        token_slot_bytes: bytes,
        act_slots: slots,
        act_slot_bytes: bytes,
    }
}

fn seed() -> u64 {
    let s = rand::rng().random();
    eprintln!("seed {s}");
    s
}

#[test]
fn messages_cross_in_order_with_wraparound_and_stats() {
    let seg = Segment::create(&spec(4, 8192)).unwrap();
    // The consumer maps the segment a second time, as the executive would.
    let other = Segment::open(seg.name()).unwrap();
    let mut tx = seg.producer(RingId::Activations);
    let mut rx = other.consumer(RingId::Activations);
    let s = seed();
    let n = 200usize;
    let sender = std::thread::spawn(move || {
        let mut rng = ChaCha8Rng::seed_from_u64(s);
        for i in 0..n {
            let len = rng.random_range(1..=8192);
            let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let header = SlotHeader {
                kind: kind::ACTIVATIONS,
                stream: i as u32 % 3,
                first_pos: i as u32,
                count: 1,
                dtype: dtype::F32,
                request: i as u64 * 7,
                ..Default::default()
            };
            assert!(tx.send(header, &payload, Duration::from_secs(10)).unwrap());
        }
        tx
    });
    let mut rng = ChaCha8Rng::seed_from_u64(s);
    let mut total = 0u64;
    for i in 0..n {
        let len = rng.random_range(1..=8192);
        let want: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let m = rx.recv(Duration::from_secs(10)).unwrap().expect("message");
        assert_eq!(m.header.seq, i as u64);
        assert_eq!(m.header.first_pos, i as u32);
        assert_eq!(m.header.request, i as u64 * 7);
        assert_eq!(m.payload(), &want[..]);
        total += len as u64;
    }
    let tx = sender.join().unwrap();
    let st = seg.stats()[RingId::Activations as usize];
    assert_eq!(st.messages, n as u64);
    assert_eq!(st.bytes, total);
    assert_eq!(st.occupancy, 0);
    assert!(st.high_water >= 1 && st.high_water <= 4, "{st:?}");
    assert_eq!(tx.stats(), st);
    assert_eq!(st.slot_bytes, 8192);
    // The token ring saw nothing.
    assert_eq!(seg.stats()[RingId::Tokens as usize].messages, 0);
}

#[test]
fn a_full_ring_times_out_and_frees_on_release() {
    let seg = Segment::create(&spec(2, 100)).unwrap();
    let mut tx = seg.producer(RingId::Tokens);
    let mut rx = seg.consumer(RingId::Tokens);
    let h = SlotHeader {
        kind: kind::TOKENS,
        ..Default::default()
    };
    assert!(tx.send(h, &[1, 2, 3, 4], Duration::ZERO).unwrap());
    assert!(tx.send(h, &[5, 6, 7, 8], Duration::ZERO).unwrap());
    assert_eq!(seg.stats()[0].occupancy, 2);
    assert!(!tx.send(h, &[9], Duration::from_millis(20)).unwrap());
    assert!(matches!(
        tx.send(h, &vec![0; 5000], Duration::ZERO),
        Err(RingError::TooBig { .. })
    ));
    {
        let m = rx.recv(Duration::ZERO).unwrap().unwrap();
        assert_eq!(m.payload(), &[1, 2, 3, 4]);
    }
    assert!(tx.send(h, &[9], Duration::ZERO).unwrap());
    assert!(rx.recv(Duration::ZERO).unwrap().is_some());
    assert!(rx.recv(Duration::ZERO).unwrap().is_some());
    assert!(rx.recv(Duration::from_millis(10)).unwrap().is_none());
    assert_eq!(seg.stats()[0].high_water, 2);
}

#[test]
fn a_corrupted_slot_header_is_an_error() {
    let seg = Segment::create(&spec(4, 64)).unwrap();
    let mut tx = seg.producer(RingId::Activations);
    let mut rx = seg.consumer(RingId::Activations);
    let h = SlotHeader {
        kind: kind::ACTIVATIONS,
        ..Default::default()
    };
    tx.send(h, &[1; 16], Duration::ZERO).unwrap();
    seg.scribble_slot_header(RingId::Activations, 0, 0xAB);
    match rx.recv(Duration::ZERO) {
        Err(RingError::Corrupt { ring, slot, .. }) => {
            assert_eq!(ring, "activation ring");
            assert_eq!(slot, 0);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a scribbled header was accepted"),
    }
    // A token message on the activation ring is refused too.
    let seg = Segment::create(&spec(4, 64)).unwrap();
    let mut tx = seg.producer(RingId::Activations);
    let mut rx = seg.consumer(RingId::Activations);
    let h = SlotHeader {
        kind: kind::TOKENS,
        ..Default::default()
    };
    tx.send(h, &[1; 4], Duration::ZERO).unwrap();
    assert!(matches!(
        rx.recv(Duration::ZERO),
        Err(RingError::Corrupt { .. })
    ));
}

#[test]
fn open_checks_the_header_and_names_the_segment() {
    let err = Segment::open("hybrid-tui.1.doesnotexist").err().unwrap();
    assert!(
        err.to_string().contains("hybrid-tui.1.doesnotexist"),
        "{err}"
    );
    let seg = Segment::create(&spec(2, 64)).unwrap();
    let path = seg.path();
    assert!(path.exists());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Break the magic through a second mapping: open refuses it.
    std::fs::write(&path, vec![7u8; seg.len()]).unwrap();
    let err = Segment::open(seg.name()).err().unwrap();
    assert!(matches!(err, RingError::BadHeader { .. }), "{err}");
    drop(seg);
    assert!(!path.exists(), "the creator unlinks its segment");
}

#[test]
fn too_little_shared_memory_is_a_clear_error_at_creation() {
    let free = {
        let c = std::ffi::CString::new("/dev/shm").unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bavail as u64 * s.f_frsize as u64
    };
    let before = list_segments();
    let huge = spec(4, (free / 2) as usize + (1 << 30));
    let err = Segment::create(&huge).err().expect("must not fit");
    let msg = err.to_string();
    assert!(matches!(err, RingError::NoSpace { .. }), "{msg}");
    assert!(msg.contains("/dev/shm") && msg.contains("MiB"), "{msg}");
    let after = list_segments();
    assert!(
        after.iter().all(|n| before.contains(n)),
        "nothing left behind"
    );
}

#[test]
fn stale_segments_of_dead_processes_are_removed() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = std::path::Path::new(segment::SHM_DIR).join(format!("{}{dead}.0", segment::PREFIX));
    std::fs::write(&stale, b"old").unwrap();
    let live = Segment::create(&spec(1, 64)).unwrap();
    let removed = remove_stale_segments();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!stale.exists());
    assert!(live.path().exists(), "a live process's segment stays");
}
