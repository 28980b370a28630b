//! `hybrid-executive --serve`: the executive process.
//!
//! Says hello on stdout, takes a start request on stdin, compiles shard A,
//! then serves the token ring: each message runs through shard A and its
//! hidden states land directly in an activation slot. Heartbeats (stats)
//! go out every [`HEARTBEAT`]. It exits when told to, when stdin closes
//! (the parent is gone), or when the parent dies (PR_SET_PDEATHSIG).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::session::{DeviceProps, new_core};
use super::shard::{ShardA, ShardAOptions, StreamKv};
use crate::bake::store::BakedModel;
use crate::ring::wait::mono_ns;
use crate::ring::{RingId, Segment, SlotHeader, dtype, flags, kind};
use crate::supervisor::protocol::{
    Capacities, ControlLine, ExecStats, FromExecutive, HEARTBEAT, PROTOCOL_VERSION, Role,
    StartRequest, ToExecutive, encode, model_hash, read_control_line,
};

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_START_FAILED: i32 = 2;
pub const EXIT_RING_FAILED: i32 = 3;
pub const EXIT_PROTOCOL: i32 = 4;
/// `--parent-pid` is not this process's parent (it died before we started,
/// or someone started us by hand).
pub const EXIT_NO_PARENT: i32 = 5;

/// stdout shared by the main loop and the heartbeat thread.
#[derive(Clone)]
pub(super) struct Out(Arc<Mutex<std::io::Stdout>>);

impl Out {
    pub(super) fn send(&self, msg: &FromExecutive) {
        if let Ok(mut o) = self.0.lock() {
            // A closed stdout means the parent is gone; stdin EOF ends us.
            let _ = o.write_all(encode(msg).as_bytes());
            let _ = o.flush();
        }
    }
}

/// Die with the parent: SIGKILL when the parent exits. Err (the actual
/// parent) when `parent` is not it: the parent died before we started (the
/// race between fork and prctl), or we were started by hand.
fn tie_to_parent(parent: Option<u32>) -> Result<(), u32> {
    // SAFETY: prctl with an integer argument; getppid has no preconditions.
    let actual = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        libc::getppid() as u32
    };
    match parent {
        Some(p) if p != actual => Err(actual),
        _ => Ok(()),
    }
}

pub(super) fn fail(out: &Out, code: i32, message: String) -> i32 {
    tracing::error!("{message}");
    out.send(&FromExecutive::Error {
        message,
        fatal: true,
    });
    code
}

/// Run the executive; returns the process exit code.
pub fn serve(parent: Option<u32>) -> i32 {
    if let (Err(actual), Some(p)) = (tie_to_parent(parent), parent) {
        tracing::error!(
            "--parent-pid {p} is not this process's parent ({actual}): the parent is gone or this was started by hand; hybrid-executive --serve is started by hybrid-tui"
        );
        return EXIT_NO_PARENT;
    }
    let out = Out(Arc::new(Mutex::new(std::io::stdout())));
    out.send(&FromExecutive::Hello {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    let start: StartRequest = match read_control_line(&mut std::io::stdin().lock()) {
        ControlLine::Msg(ToExecutive::Start(s)) => *s,
        ControlLine::Msg(ToExecutive::Shutdown) | ControlLine::Eof => return EXIT_OK,
        ControlLine::Bad { what } => {
            return fail(
                &out,
                EXIT_PROTOCOL,
                format!("expected a start request, got {what}"),
            );
        }
    };
    if start.protocol != PROTOCOL_VERSION {
        return fail(
            &out,
            EXIT_PROTOCOL,
            format!(
                "protocol {} requested, this executive speaks {PROTOCOL_VERSION}: use the hybrid-executive built with this hybrid-tui",
                start.protocol
            ),
        );
    }
    let ran = match start.role {
        Role::ShardA => run(&start, &out),
        Role::Embed => super::embed_serve::run(&start, &out),
    };
    match ran {
        Ok(()) => EXIT_OK,
        Err((code, message)) => fail(&out, code, message),
    }
}

/// An exit code and the message sent before exiting.
pub(super) type Exit = (i32, String);

/// The model's hash checked against the parent's, and the segment opened.
pub(super) fn open_checked(start: &StartRequest) -> Result<(String, Arc<Segment>), Exit> {
    let startup = |m: String| (EXIT_START_FAILED, m);
    let hash = model_hash(&start.model_dir)
        .map_err(|e| startup(format!("{}: {e}", start.model_dir.display())))?;
    if hash != start.model_hash {
        return Err(startup(format!(
            "{} changed under us: model hash {hash}, the parent loaded {}; restart hybrid-tui",
            start.model_dir.display(),
            start.model_hash
        )));
    }
    let segment = Segment::open(&start.segment).map_err(|e| startup(e.to_string()))?;
    Ok((hash, segment))
}

/// The counters the heartbeat sends, and since when (CLOCK_MONOTONIC ns,
/// 0 = idle) the call in progress runs.
pub(super) struct Heartbeat {
    shared: Arc<Mutex<ExecStats>>,
    pub(super) busy_since: Arc<AtomicU64>,
}

impl Heartbeat {
    /// One heartbeat thread for the whole life of the process: it says we
    /// are alive while compiling (minutes on an NPU) and during long calls,
    /// and how long the current call has been running, so the parent can
    /// tell a slow call from a stuck one.
    pub(super) fn spawn(out: &Out, started: Instant) -> Heartbeat {
        let shared = Arc::new(Mutex::new(ExecStats {
            phase: "compiling".into(),
            ..Default::default()
        }));
        let busy_since = Arc::new(AtomicU64::new(0));
        let (out, sh, busy) = (out.clone(), shared.clone(), busy_since.clone());
        std::thread::spawn(move || {
            loop {
                let mut st = match sh.lock() {
                    Ok(s) => s.clone(),
                    Err(_) => return,
                };
                st.uptime_ms = started.elapsed().as_millis() as u64;
                let since = busy.load(Ordering::Relaxed);
                st.busy_ms = if since == 0 {
                    0
                } else {
                    mono_ns().saturating_sub(since) / 1_000_000
                };
                out.send(&FromExecutive::Stats(st));
                std::thread::sleep(HEARTBEAT);
            }
        });
        Heartbeat { shared, busy_since }
    }

    pub(super) fn publish(&self, stats: &ExecStats) {
        if let Ok(mut s) = self.shared.lock() {
            *s = stats.clone();
        }
    }
}

/// Watch stdin once running: shutdown sets the returned flag, EOF (the
/// parent is gone) exits; anything else breaks the protocol: say so and exit.
pub(super) fn watch_control(out: &Out) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, out) = (stop.clone(), out.clone());
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        loop {
            match read_control_line::<ToExecutive>(&mut stdin.lock()) {
                ControlLine::Eof => std::process::exit(EXIT_OK),
                ControlLine::Msg(ToExecutive::Shutdown) => flag.store(true, Ordering::SeqCst),
                ControlLine::Msg(ToExecutive::Start(_)) => std::process::exit(fail(
                    &out,
                    EXIT_PROTOCOL,
                    "a second start request: this executive is already running".into(),
                )),
                ControlLine::Bad { what } => std::process::exit(fail(
                    &out,
                    EXIT_PROTOCOL,
                    format!("expected shutdown, got {what}"),
                )),
            }
        }
    });
    stop
}

fn run(start: &StartRequest, out: &Out) -> Result<(), Exit> {
    let started = Instant::now();
    let startup = |m: String| (EXIT_START_FAILED, m);
    let s = &start.shard_a;
    let cores = crate::affinity::parse_cpu_list(&s.cpu_cores)
        .map_err(|e| startup(format!("shard_a.cpu_cores: {e}")))?;
    crate::affinity::pin_current_thread(&cores)
        .map_err(|e| startup(format!("shard_a.cpu_cores: {e}")))?;
    let (hash, segment) = open_checked(start)?;
    let model = BakedModel::open(&start.model_dir).map_err(|e| startup(e.to_string()))?;
    let mut core = new_core(&start.runtime_dir).map_err(|e| startup(e.to_string()))?;
    let opts = ShardAOptions {
        layers: start.split,
        device: s.device.clone(),
        props: DeviceProps::from_settings(s),
        static_shapes: s.static_shapes,
        chunk: s.prefill_chunk,
        capacity: s.kv_capacity,
        span: super::shard::RESIDENT_SPAN,
    };
    out.send(&FromExecutive::Compiling {
        device: s.device.clone(),
        layers: start.split,
        mode: if s.static_shapes {
            "static"
        } else {
            "resident"
        }
        .into(),
    });
    let beat = Heartbeat::spawn(out, started);
    let mut shard =
        ShardA::compile(&mut core, &model, &opts).map_err(|e| startup(format!("shard A: {e}")))?;
    let act_slot = segment.slot_bytes(RingId::Activations);
    if act_slot < shard.max_out_bytes() {
        return Err(startup(format!(
            "activation slots of {act_slot} bytes cannot hold {} bytes of hidden states",
            shard.max_out_bytes()
        )));
    }
    tracing::info!(
        device = %s.device,
        layers = start.split,
        compile_ms = shard.compile_time.as_secs_f64() * 1e3,
        "shard A compiled"
    );
    out.send(&FromExecutive::Ready {
        model_hash: hash,
        device: s.device.clone(),
        compile_ms: shard.compile_time.as_secs_f64() * 1e3,
        capacities: Capacities {
            kv_capacity: s.kv_capacity,
            chunk: s.prefill_chunk,
            hidden: shard.spec.hidden_size,
            act_slot_bytes: act_slot,
            max_out_bytes: shard.max_out_bytes(),
        },
    });

    let stop = watch_control(out);

    let mut tokens_rx = segment.consumer(RingId::Tokens);
    let mut acts_tx = segment.producer(RingId::Activations);
    let mut streams: HashMap<u32, StreamKv> = HashMap::new();
    let mut stats = ExecStats {
        phase: "running".into(),
        ..Default::default()
    };
    let publish = |stats: &ExecStats| beat.publish(stats);
    publish(&stats);
    let h = shard.spec.hidden_size;
    while !stop.load(Ordering::SeqCst) {
        let msg = tokens_rx
            .recv(Duration::from_millis(100))
            .map_err(|e| (EXIT_RING_FAILED, e.to_string()))?;
        let Some(msg) = msg else { continue };
        let hd = msg.header;
        let payload = msg.payload();
        let ids: Vec<u32> = payload
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        drop(msg);
        if hd.flags & flags::END != 0 {
            streams.remove(&hd.stream);
            stats.streams = streams.len();
            publish(&stats);
            continue;
        }
        let t_start = mono_ns();
        beat.busy_since.store(t_start, Ordering::Relaxed);
        // Reply slot first: shard A writes into it directly.
        let mut slot = loop {
            if let Some(r) = acts_tx.reserve(Duration::from_millis(100)) {
                break r;
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
        };
        let mut reply = SlotHeader {
            kind: kind::ACTIVATIONS,
            stream: hd.stream,
            flags: hd.flags,
            first_pos: hd.first_pos,
            count: ids.len() as u32,
            dtype: dtype::F32,
            request: hd.request,
            t_submit_ns: hd.t_submit_ns,
            t_start_ns: t_start,
            ..Default::default()
        };
        let result = (|| -> Result<Duration, String> {
            if hd.count as usize != ids.len() || ids.len() * 4 != payload_len(&hd) {
                return Err(format!(
                    "token message of {} bytes for {} tokens",
                    hd.payload_len, hd.count
                ));
            }
            if hd.flags & flags::NEW != 0 || !streams.contains_key(&hd.stream) {
                streams.insert(hd.stream, shard.new_stream().map_err(|e| e.to_string())?);
            }
            let kv = streams
                .get_mut(&hd.stream)
                .ok_or_else(|| "stream vanished".to_string())?;
            if hd.flags & flags::RESET != 0 {
                kv.reset();
            }
            if hd.first_pos as usize != kv.len() {
                return Err(format!(
                    "stream {} is at position {}, the message starts at {}",
                    hd.stream,
                    kv.len(),
                    hd.first_pos
                ));
            }
            shard
                .run_into(kv, &ids, slot.payload())
                .map_err(|e| e.to_string())
        })();
        match result {
            Ok(infer) => {
                stats.infers += 1;
                stats.tokens += ids.len() as u64;
                stats.last_infer_ms = infer.as_secs_f64() * 1e3;
                stats.infer_ms_total += stats.last_infer_ms;
                reply.payload_len = (ids.len() * h * 4) as u64;
            }
            Err(e) => {
                tracing::warn!(stream = hd.stream, "shard A failed: {e}");
                let text = e.into_bytes();
                let n = text.len().min(slot.capacity());
                slot.payload()[..n].copy_from_slice(&text[..n]);
                reply.kind = kind::ERROR;
                reply.dtype = dtype::UTF8;
                reply.payload_len = n as u64;
            }
        }
        reply.t_done_ns = mono_ns();
        beat.busy_since.store(0, Ordering::Relaxed);
        stats.streams = streams.len();
        publish(&stats);
        slot.publish(reply)
            .map_err(|e| (EXIT_RING_FAILED, e.to_string()))?;
    }
    out.send(&FromExecutive::Bye);
    Ok(())
}

fn payload_len(h: &SlotHeader) -> usize {
    h.payload_len as usize
}
