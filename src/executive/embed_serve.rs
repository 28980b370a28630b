//! `hybrid-executive --serve` in the embed role: the embedding model in a
//! process of its own, beside shard A's executive, so an indexing batch
//! never holds up a decode step in our code (the device's driver shares the
//! device between the two) and a crash of either is a restart of one.
//!
//! The same control channel (hello, start, compiling, ready, heartbeats,
//! shutdown) and the same two rings: a token-ring message of kind
//! `EMBED_TOKENS` carries a padded batch (`count` rows of `first_pos`
//! ids, then the rows' real lengths; `stream` says how many rows hold a
//! text), the reply of kind `EMBEDDINGS` one f32 vector per text, or
//! `ERROR` with the reason.

use std::time::{Duration, Instant};

use super::encoder::EncoderSession;
use super::serve::{
    EXIT_RING_FAILED, EXIT_START_FAILED, Exit, Heartbeat, Out, open_checked, watch_control,
};
use super::session::{DeviceProps, new_core};
use crate::bake::encoder::BakedEncoder;
use crate::bake::ir::encoder::{EncoderShape, build_encoder};
use crate::model::bert_tokens::TokenBatch;
use crate::ring::wait::mono_ns;
use crate::ring::{RingId, SlotHeader, dtype, kind};
use crate::supervisor::protocol::{Capacities, ExecStats, FromExecutive, StartRequest};

/// Bytes of a token-ring payload for `rows` rows of `len` ids.
pub fn batch_bytes(rows: usize, len: usize) -> usize {
    (rows * len + rows) * 4
}

/// The payload of an `EMBED_TOKENS` message: ids, then real lengths.
pub fn encode_batch(batch: &TokenBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch_bytes(batch.rows, batch.len));
    out.extend(batch.ids.iter().flat_map(|&id| (id as u32).to_le_bytes()));
    for r in 0..batch.rows {
        let n = batch.mask[r * batch.len..(r + 1) * batch.len]
            .iter()
            .filter(|&&m| m != 0)
            .count() as u32;
        out.extend(n.to_le_bytes());
    }
    out
}

/// The batch back from a message's header and payload.
fn decode_batch(h: &SlotHeader, payload: &[u8]) -> Result<TokenBatch, String> {
    let (rows, len, texts) = (h.count as usize, h.first_pos as usize, h.stream as usize);
    if payload.len() != batch_bytes(rows, len) || texts > rows || rows == 0 || len == 0 {
        return Err(format!(
            "an embedding batch of {} bytes for {texts} texts in {rows} rows of {len} tokens",
            payload.len()
        ));
    }
    let words: Vec<u32> = payload
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (ids, lens) = words.split_at(rows * len);
    let mut mask = vec![0i64; rows * len];
    for (r, &n) in lens.iter().enumerate() {
        let n = (n as usize).min(len);
        if n == 0 {
            return Err(format!("row {r} of an embedding batch has no tokens"));
        }
        mask[r * len..r * len + n].fill(1);
    }
    Ok(TokenBatch {
        rows,
        len,
        ids: ids.iter().map(|&i| i as i64).collect(),
        mask,
        tokens: lens[..texts].iter().map(|&n| n as usize).collect(),
    })
}

pub(super) fn run(start: &StartRequest, out: &Out) -> Result<(), Exit> {
    let started = Instant::now();
    let startup = |m: String| (EXIT_START_FAILED, m);
    let e = start
        .embed
        .clone()
        .ok_or_else(|| startup("an embed start request without [embed] settings".into()))?;
    // Before OpenVINO makes its threads: they inherit it.
    if e.nice > 0 {
        // SAFETY: setpriority on this process; no memory is touched.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, e.nice) };
    }
    let (hash, segment) = open_checked(start)?;
    let model = BakedEncoder::open(&start.model_dir).map_err(|e| startup(e.to_string()))?;
    let spec = model.spec().clone();
    let max_length = e.max_length.min(spec.max_position_embeddings);
    let shape = if e.static_shapes {
        EncoderShape::Static {
            batch: e.batch,
            length: max_length,
        }
    } else {
        EncoderShape::Dynamic
    };
    let mut core = new_core(&start.runtime_dir).map_err(|e| startup(e.to_string()))?;
    out.send(&FromExecutive::Compiling {
        device: e.device.clone(),
        layers: spec.num_layers,
        mode: if e.static_shapes { "static" } else { "dynamic" }.into(),
    });
    let beat = Heartbeat::spawn(out, started);
    let ir = build_encoder(&model, shape, spec.pooling)
        .map_err(|err| startup(format!("the embedding model's graph: {err}")))?;
    let props = DeviceProps {
        performance_hint: String::new(),
        inference_precision: e.inference_precision.clone(),
        cache_dir: e.cache_dir.clone(),
        exact: e.inference_precision == "f32",
        num_threads: 0,
        pin_threads: false,
    };
    let mut session = EncoderSession::compile(&mut core, &ir, spec.hidden_size, &e.device, &props)
        .map_err(|err| startup(format!("the embedding model: {err}")))?;
    let need_in = batch_bytes(e.batch, max_length);
    let need_out = e.batch * spec.hidden_size * 4;
    let (have_in, have_out) = (
        segment.slot_bytes(RingId::Tokens),
        segment.slot_bytes(RingId::Activations),
    );
    if have_in < need_in || have_out < need_out {
        return Err(startup(format!(
            "ring slots of {have_in}/{have_out} bytes cannot hold a batch of {need_in}/{need_out}"
        )));
    }
    let compile_ms = session.compile_time.as_secs_f64() * 1e3;
    tracing::info!(device = %e.device, compile_ms, "embedding model compiled");
    out.send(&FromExecutive::Ready {
        model_hash: hash,
        device: e.device.clone(),
        compile_ms,
        capacities: Capacities {
            kv_capacity: max_length,
            chunk: e.batch,
            hidden: spec.hidden_size,
            act_slot_bytes: have_out,
            max_out_bytes: need_out,
        },
    });
    let stop = watch_control(out);
    let mut rx = segment.consumer(RingId::Tokens);
    let mut tx = segment.producer(RingId::Activations);
    let mut stats = ExecStats {
        phase: "running".into(),
        ..Default::default()
    };
    beat.publish(&stats);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let msg = rx
            .recv(Duration::from_millis(100))
            .map_err(|e| (EXIT_RING_FAILED, e.to_string()))?;
        let Some(msg) = msg else { continue };
        let hd = msg.header;
        let batch = if hd.kind == kind::EMBED_TOKENS {
            decode_batch(&hd, msg.payload())
        } else {
            Err(format!(
                "message kind {} on an embedding executive",
                hd.kind
            ))
        };
        drop(msg);
        let t_start = mono_ns();
        beat.busy_since
            .store(t_start, std::sync::atomic::Ordering::Relaxed);
        let result = batch.and_then(|b| {
            session
                .run(&b)
                .map(|v| (v, b.tokens.iter().sum::<usize>()))
                .map_err(|e| e.to_string())
        });
        let mut reply = SlotHeader {
            kind: kind::EMBEDDINGS,
            stream: hd.stream,
            count: hd.stream,
            dtype: dtype::F32,
            request: hd.request,
            t_submit_ns: hd.t_submit_ns,
            t_start_ns: t_start,
            ..Default::default()
        };
        let payload: Vec<u8> = match result {
            Ok((vectors, tokens)) => {
                stats.infers += 1;
                stats.tokens += tokens as u64;
                stats.last_infer_ms = (mono_ns() - t_start) as f64 / 1e6;
                stats.infer_ms_total += stats.last_infer_ms;
                vectors.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            Err(err) => {
                tracing::warn!("embedding batch failed: {err}");
                reply.kind = kind::ERROR;
                reply.dtype = dtype::UTF8;
                let mut text = err.into_bytes();
                text.truncate(have_out);
                text
            }
        };
        beat.busy_since
            .store(0, std::sync::atomic::Ordering::Relaxed);
        beat.publish(&stats);
        reply.t_done_ns = mono_ns();
        loop {
            match tx.send(reply, &payload, Duration::from_millis(100)) {
                Ok(true) => break,
                Ok(false) if stop.load(std::sync::atomic::Ordering::SeqCst) => return Ok(()),
                Ok(false) => continue,
                Err(e) => return Err((EXIT_RING_FAILED, e.to_string())),
            }
        }
    }
    out.send(&FromExecutive::Bye);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_survives_the_ring_encoding() {
        let batch = TokenBatch {
            rows: 3,
            len: 4,
            ids: vec![2, 9, 8, 3, 2, 7, 3, 0, 2, 3, 0, 0],
            mask: vec![1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0],
            tokens: vec![4, 3],
        };
        let bytes = encode_batch(&batch);
        assert_eq!(bytes.len(), batch_bytes(3, 4));
        let h = SlotHeader {
            kind: kind::EMBED_TOKENS,
            count: 3,
            first_pos: 4,
            stream: 2,
            ..Default::default()
        };
        assert_eq!(decode_batch(&h, &bytes), Ok(batch));
        let short = SlotHeader { count: 4, ..h };
        assert!(decode_batch(&short, &bytes).is_err());
    }
}
