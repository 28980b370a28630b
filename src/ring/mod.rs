//! The shared-memory segment between the two processes and its two
//! single-producer/single-consumer rings.
//!
//! Layout (all offsets from the start of the segment, little-endian,
//! [`LAYOUT_VERSION`]):
//!
//! ```text
//! 0      SegmentHeader  magic "HYBRIDTU", layout version, sizes, ring table
//! 4096   ring 0 (tokens, parent → executive)
//!          RingControl   5 cache lines: head | tail | data doorbell |
//!                        space doorbell | stats (high water, messages, bytes)
//!          SlotHeader[slots]   128 bytes each
//!          payload[slots]      slot_bytes each, 4096-aligned
//!        ring 1 (activations, executive → parent), same shape
//! ```
//!
//! `head` counts published messages (written by the producer only), `tail`
//! released ones (consumer only); occupancy is `head - tail`. A slot's
//! header and payload are written before `head` moves (release) and read
//! after it is seen (acquire). Waiting spins briefly, then sleeps on a futex
//! in the segment ([`wait::Doorbell`]).
//!
//! The header (4096 bytes): magic `HYBRIDTU` (u64), layout version (u32),
//! header bytes (u32), total bytes (u64), creator pid (u32), slot-header
//! bytes (u32), and the ring table: two {control offset u64, payload offset
//! u64, slots u32, slot bytes u32}. Ring 0 carries token ids to the
//! executive, ring 1 hidden states back.
//!
//! A slot header (128 bytes): magic `SLOT`, kind (1 tokens, 2 activations, 3
//! error text; an embedding executive's 4 token batch and 5 vectors), stream id, flags (NEW 1, RESET 2, END 4), first position,
//! count (tokens or rows), dtype (u32, f32, f16, utf8), payload length (u64),
//! seq (the `head` value it was published at), the request id (echoed), and
//! CLOCK_MONOTONIC timestamps: parent submitted, executive started,
//! executive finished. The consumer checks magic, seq, kind and length
//! before it touches a payload: a corrupted header is [`RingError::Corrupt`]
//! (the executive reports it as fatal and exits 3; the parent restarts it).
//!
//! Publishing stores `head` with SeqCst and rings the data doorbell;
//! releasing stores `tail` and rings the space doorbell. A waiter spins for
//! 50 µs, then sleeps on a shared (not `_PRIVATE`) futex on the doorbell's
//! seq word, at most 50 ms at a time so callers re-check deadlines and the
//! peer's health; a doorbell only makes the wake call when its sleepers
//! count is non-zero. Occupancy, high water, messages and bytes can be read
//! by anyone who maps the segment ([`segment::Segment::stats`]).
//!
//! Zero copy on the executive's side: shard A's `hidden_states` output is an
//! OpenVINO tensor over the activation slot's payload
//! (`executive::hostmem`), so OpenVINO writes the result into shared memory;
//! the parent copies the slot once into the tensor shard B uploads, then
//! releases it.

pub mod segment;
pub mod wait;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use segment::{Segment, SegmentSpec, remove_stale_segments};
use wait::Doorbell;

/// "HYBRIDTU" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HYBRIDTU");
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes reserved for the segment header.
pub const HEADER_BYTES: usize = 4096;
/// Payload alignment (what the NPU wants for imported memory).
pub const PAGE: usize = 4096;
/// Bytes of one slot header.
pub const SLOT_HEADER_BYTES: usize = 128;
/// "SLOT"
pub const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"SLOT");

/// Which ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RingId {
    /// Parent → executive: token ids to run through shard A.
    Tokens = 0,
    /// Executive → parent: shard A's hidden states.
    Activations = 1,
}

impl RingId {
    pub fn name(self) -> &'static str {
        match self {
            RingId::Tokens => "token ring",
            RingId::Activations => "activation ring",
        }
    }
}

/// What a slot holds.
pub mod kind {
    /// Token ids (u32) of one stream.
    pub const TOKENS: u32 = 1;
    /// Hidden states of one stream.
    pub const ACTIVATIONS: u32 = 2;
    /// Shard A failed on this stream's request; the payload is UTF-8 text.
    pub const ERROR: u32 = 3;
    /// A batch for the embedding model: `count` rows padded to `first_pos`
    /// tokens, the payload `count × first_pos` u32 ids then `count` u32
    /// real lengths (the mask).
    pub const EMBED_TOKENS: u32 = 4;
    /// The batch's vectors: `count` rows of f32.
    pub const EMBEDDINGS: u32 = 5;
}

/// Flags of a token message.
pub mod flags {
    /// First message of a stream: the executive creates its KV cache.
    pub const NEW: u32 = 1;
    /// Forget the stream's history first (its positions restart at `first_pos`).
    pub const RESET: u32 = 2;
    /// The stream is over: free its cache (no tokens, no reply).
    pub const END: u32 = 4;
}

/// Payload element types.
pub mod dtype {
    pub const U32: u32 = 0;
    pub const F32: u32 = 1;
    pub const F16: u32 = 2;
    pub const UTF8: u32 = 3;
}

/// One slot's header. The producer fills everything but `magic` and `seq`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotHeader {
    pub magic: u32,
    pub kind: u32,
    pub stream: u32,
    pub flags: u32,
    /// Position of the first token.
    pub first_pos: u32,
    /// Tokens (rows) in the message.
    pub count: u32,
    pub dtype: u32,
    pub _pad: u32,
    pub payload_len: u64,
    /// Message number on its ring (== the head value it was published at).
    pub seq: u64,
    /// Opaque request id, echoed from a token message to its reply.
    pub request: u64,
    /// CLOCK_MONOTONIC ns: when the parent submitted the tokens (echoed).
    pub t_submit_ns: u64,
    /// When the executive started shard A on them.
    pub t_start_ns: u64,
    /// When the executive finished (just before publishing).
    pub t_done_ns: u64,
    pub _reserved: [u64; 6],
}

const _: () = assert!(std::mem::size_of::<SlotHeader>() == SLOT_HEADER_BYTES);

#[repr(C, align(64))]
struct Line<T>(T);

#[repr(C)]
struct StatsBlock {
    high_water: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// Control block at the start of each ring; all-zero bytes are its initial state.
#[repr(C)]
pub(crate) struct RingControl {
    head: Line<AtomicU64>,
    tail: Line<AtomicU64>,
    data: Line<Doorbell>,
    space: Line<Doorbell>,
    stats: Line<StatsBlock>,
}

pub(crate) const CONTROL_BYTES: usize = std::mem::size_of::<RingControl>();
const _: () = assert!(CONTROL_BYTES == 5 * 64);

/// A ring's place in the segment (part of the segment header).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingDesc {
    /// Offset of the RingControl; the slot headers follow it.
    pub offset: u64,
    /// Offset of slot 0's payload (page-aligned).
    pub payload_offset: u64,
    pub slots: u32,
    /// Payload bytes per slot (a multiple of PAGE).
    pub slot_bytes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(
        "{dir} has {free_mib} MiB free but the shared-memory rings need {need_mib} MiB: free space there (old segments: hybrid-tui removes its own stale ones at start), enlarge it (sudo mount -o remount,size=2G {dir}), or lower ring.slots / shard_a.prefill_chunk"
    )]
    NoSpace {
        dir: String,
        need_mib: u64,
        free_mib: u64,
    },
    #[error("creating shared memory segment {name}: {message}")]
    Create { name: String, message: String },
    #[error("opening shared memory segment {name}: {message}")]
    Open { name: String, message: String },
    #[error("shared memory segment {name} has a bad header: {reason}")]
    BadHeader { name: String, reason: String },
    #[error("corrupted slot {slot} on the {ring}: {reason}")]
    Corrupt {
        ring: &'static str,
        slot: u64,
        reason: String,
    },
    #[error("a message of {need} bytes does not fit a {ring} slot of {cap} bytes")]
    TooBig {
        ring: &'static str,
        need: usize,
        cap: usize,
    },
}

/// A moment's view of one ring, readable by anyone mapping the segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RingStats {
    pub slots: u32,
    pub slot_bytes: u64,
    /// Messages published and not yet released.
    pub occupancy: u64,
    pub high_water: u64,
    pub messages: u64,
    pub bytes: u64,
}

/// Pointers into one ring of a mapped segment.
#[derive(Clone, Copy)]
struct View {
    control: *const RingControl,
    headers: *mut SlotHeader,
    payload: *mut u8,
    slots: u64,
    slot_bytes: usize,
    id: RingId,
}

impl View {
    fn control(&self) -> &RingControl {
        // SAFETY: `control` points into the mapping the owning Arc<Segment>
        // keeps alive; the segment validated the offsets against its length
        // and the block is made of atomics only.
        unsafe { &*self.control }
    }

    fn slot(&self, index: u64) -> (*mut SlotHeader, *mut u8) {
        let i = (index % self.slots) as usize;
        // SAFETY: i < slots, and the segment checked that slots headers and
        // slots * slot_bytes of payload lie inside the mapping.
        unsafe { (self.headers.add(i), self.payload.add(i * self.slot_bytes)) }
    }

    fn stats(&self) -> RingStats {
        let c = self.control();
        let head = c.head.0.load(Ordering::Acquire);
        let tail = c.tail.0.load(Ordering::Acquire);
        RingStats {
            slots: self.slots as u32,
            slot_bytes: self.slot_bytes as u64,
            occupancy: head.saturating_sub(tail),
            high_water: c.stats.0.high_water.load(Ordering::Relaxed),
            messages: c.stats.0.messages.load(Ordering::Relaxed),
            bytes: c.stats.0.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The producing end of a ring. One per ring, in one process.
pub struct Producer {
    _segment: Arc<Segment>,
    view: View,
}

/// The consuming end of a ring. One per ring, in one process.
pub struct Consumer {
    _segment: Arc<Segment>,
    view: View,
}

// SAFETY: the raw pointers target a shared mapping kept alive by the Arc;
// each end is used from one thread at a time (&mut self), the other end's
// state is only touched through atomics.
unsafe impl Send for Producer {}
unsafe impl Send for Consumer {}

/// A reserved, not yet published slot.
pub struct Reservation<'a> {
    producer: &'a mut Producer,
    index: u64,
}

impl Reservation<'_> {
    /// The slot's payload area.
    pub fn payload(&mut self) -> &mut [u8] {
        let (_, p) = self.producer.view.slot(self.index);
        // SAFETY: the slot at `index` is free (index - tail < slots) and only
        // this producer writes it until it publishes.
        unsafe { std::slice::from_raw_parts_mut(p, self.producer.view.slot_bytes) }
    }

    /// Start of the payload area (page-aligned), for a tensor over it.
    pub fn payload_ptr(&mut self) -> *mut u8 {
        self.producer.view.slot(self.index).1
    }

    pub fn capacity(&self) -> usize {
        self.producer.view.slot_bytes
    }

    /// Publish the slot with `header` (its magic and seq are filled in here).
    pub fn publish(self, mut header: SlotHeader) -> Result<(), RingError> {
        let v = self.producer.view;
        if header.payload_len as usize > v.slot_bytes {
            return Err(RingError::TooBig {
                ring: v.id.name(),
                need: header.payload_len as usize,
                cap: v.slot_bytes,
            });
        }
        header.magic = SLOT_MAGIC;
        header.seq = self.index;
        let (h, _) = v.slot(self.index);
        // SAFETY: the slot is ours until head moves past it.
        unsafe { std::ptr::write_volatile(h, header) };
        let c = v.control();
        c.head.0.store(self.index + 1, Ordering::SeqCst);
        let used = self.index + 1 - c.tail.0.load(Ordering::Acquire);
        c.stats.0.high_water.fetch_max(used, Ordering::Relaxed);
        c.stats.0.messages.fetch_add(1, Ordering::Relaxed);
        c.stats
            .0
            .bytes
            .fetch_add(header.payload_len, Ordering::Relaxed);
        c.data.0.ring();
        Ok(())
    }
}

impl Producer {
    pub fn stats(&self) -> RingStats {
        self.view.stats()
    }

    pub fn slot_bytes(&self) -> usize {
        self.view.slot_bytes
    }

    /// Reserve the next slot, waiting up to `timeout` for one to be free.
    /// `None`: still full after `timeout`.
    pub fn reserve(&mut self, timeout: Duration) -> Option<Reservation<'_>> {
        let v = self.view;
        let c = v.control();
        let index = c.head.0.load(Ordering::Relaxed);
        let free = || index - c.tail.0.load(Ordering::Acquire) < v.slots;
        if !c.space.0.wait_until(timeout, free) {
            return None;
        }
        Some(Reservation {
            producer: self,
            index,
        })
    }

    /// Publish `header` exactly as given (magic and seq included) with
    /// `payload`, without waiting: fault injection for tests of the
    /// consumer's checks. Returns false when the ring is full.
    pub fn send_raw(&mut self, header: SlotHeader, payload: &[u8]) -> bool {
        let v = self.view;
        let c = v.control();
        let index = c.head.0.load(Ordering::Relaxed);
        if index - c.tail.0.load(Ordering::Acquire) >= v.slots || payload.len() > v.slot_bytes {
            return false;
        }
        let (h, p) = v.slot(index);
        // SAFETY: a free slot of ours (checked above); payload fits.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), p, payload.len());
            std::ptr::write_volatile(h, header);
        }
        c.head.0.store(index + 1, Ordering::SeqCst);
        c.data.0.ring();
        true
    }

    /// Copy `payload` into the next slot and publish it.
    pub fn send(
        &mut self,
        header: SlotHeader,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<bool, RingError> {
        let cap = self.view.slot_bytes;
        if payload.len() > cap {
            return Err(RingError::TooBig {
                ring: self.view.id.name(),
                need: payload.len(),
                cap,
            });
        }
        let Some(mut r) = self.reserve(timeout) else {
            return Ok(false);
        };
        r.payload()[..payload.len()].copy_from_slice(payload);
        r.publish(SlotHeader {
            payload_len: payload.len() as u64,
            ..header
        })?;
        Ok(true)
    }
}

/// A received message; its slot is released when this is dropped.
pub struct Message<'a> {
    consumer: &'a mut Consumer,
    index: u64,
    pub header: SlotHeader,
}

impl Message<'_> {
    pub fn payload(&self) -> &[u8] {
        let (_, p) = self.consumer.view.slot(self.index);
        // SAFETY: published slot, validated payload_len ≤ slot_bytes; the
        // producer does not touch it until tail moves past it.
        unsafe { std::slice::from_raw_parts(p, self.header.payload_len as usize) }
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        let c = self.consumer.view.control();
        c.tail.0.store(self.index + 1, Ordering::SeqCst);
        c.space.0.ring();
    }
}

impl Consumer {
    pub fn stats(&self) -> RingStats {
        self.view.stats()
    }

    /// The next message, waiting up to `timeout`; `Ok(None)` on timeout.
    /// A slot whose header does not check out is an error (the slot stays
    /// unreleased: the ring is not trusted after that).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Message<'_>>, RingError> {
        let v = self.view;
        let c = v.control();
        let index = c.tail.0.load(Ordering::Relaxed);
        let ready = || c.head.0.load(Ordering::Acquire) > index;
        if !c.data.0.wait_until(timeout, ready) {
            return Ok(None);
        }
        let (h, _) = v.slot(index);
        // SAFETY: published (head > index), so the header is complete.
        let header = unsafe { std::ptr::read_volatile(h) };
        let bad = |reason: String| RingError::Corrupt {
            ring: v.id.name(),
            slot: index,
            reason,
        };
        if header.magic != SLOT_MAGIC {
            return Err(bad(format!("magic {:#010x}", header.magic)));
        }
        if header.seq != index {
            return Err(bad(format!(
                "sequence {} where {index} was due",
                header.seq
            )));
        }
        let kinds: &[u32] = match v.id {
            RingId::Tokens => &[kind::TOKENS, kind::EMBED_TOKENS],
            RingId::Activations => &[kind::ACTIVATIONS, kind::EMBEDDINGS, kind::ERROR],
        };
        if !kinds.contains(&header.kind) {
            return Err(bad(format!("kind {}", header.kind)));
        }
        if header.payload_len as usize > v.slot_bytes {
            return Err(bad(format!(
                "payload of {} bytes in a slot of {}",
                header.payload_len, v.slot_bytes
            )));
        }
        Ok(Some(Message {
            consumer: self,
            index,
            header,
        }))
    }
}

#[cfg(test)]
mod tests;
