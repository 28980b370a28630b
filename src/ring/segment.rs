//! Creating, opening and cleaning up the POSIX shared-memory segment.
//!
//! Name: `hybrid-tui.<creator pid>.<random>` (in `/dev/shm` on Linux), mode
//! 0600 (the `shared_memory` crate's `shm_open`). The creator owns the name
//! and unlinks it when dropped; a segment whose creator is dead is removed
//! by [`remove_stale_segments`] at the next start. Space is reserved with
//! `posix_fallocate` at creation, so a full `/dev/shm` is an error then and
//! never a SIGBUS on first touch later.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use shared_memory::{Shmem, ShmemConf};

use super::{
    CONTROL_BYTES, Consumer, HEADER_BYTES, LAYOUT_VERSION, MAGIC, PAGE, Producer, RingDesc,
    RingError, RingId, RingStats, SLOT_HEADER_BYTES, SlotHeader, View,
};

/// Where Linux keeps POSIX shared memory.
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of our segment names.
pub const PREFIX: &str = "hybrid-tui.";

/// The header at offset 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct SegmentHeader {
    magic: u64,
    version: u32,
    header_bytes: u32,
    total_bytes: u64,
    creator_pid: u32,
    slot_header_bytes: u32,
    rings: [RingDesc; 2],
}

/// Sizes of the two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpec {
    pub token_slots: u32,
    /// Payload bytes per token slot (rounded up to a page).
    pub token_slot_bytes: usize,
    pub act_slots: u32,
    /// Payload bytes per activation slot (rounded up to a page).
    pub act_slot_bytes: usize,
}

impl SegmentSpec {
    /// The rings of a model: `slots` each way, token slots of `chunk` ids,
    /// activation slots of `chunk` f32 rows of `hidden`.
    pub fn for_model(slots: u32, chunk: usize, hidden: usize) -> SegmentSpec {
        SegmentSpec {
            token_slots: slots,
            token_slot_bytes: chunk * 4,
            act_slots: slots,
            act_slot_bytes: chunk * hidden * 4,
        }
    }
}

/// Bytes a segment of this shape takes in /dev/shm.
pub fn segment_bytes(spec: &SegmentSpec) -> u64 {
    plan(spec).0 as u64
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Header plus both rings, each ring's offsets.
fn plan(spec: &SegmentSpec) -> (usize, [RingDesc; 2]) {
    let mut at = HEADER_BYTES;
    let mut descs = [RingDesc::default(); 2];
    for (i, (slots, bytes)) in [
        (spec.token_slots, spec.token_slot_bytes),
        (spec.act_slots, spec.act_slot_bytes),
    ]
    .into_iter()
    .enumerate()
    {
        let slot_bytes = round_up(bytes.max(1), PAGE);
        let offset = at;
        let payload = round_up(
            offset + CONTROL_BYTES + slots as usize * SLOT_HEADER_BYTES,
            PAGE,
        );
        at = payload + slots as usize * slot_bytes;
        descs[i] = RingDesc {
            offset: offset as u64,
            payload_offset: payload as u64,
            slots,
            slot_bytes: slot_bytes as u32,
        };
    }
    (at, descs)
}

/// A mapped segment.
pub struct Segment {
    shm: Shmem,
    name: String,
    rings: [RingDesc; 2],
}

// SAFETY: Shmem is a mapping plus its name; all access to the mapped bytes
// goes through atomics or through the single producer/consumer of a slot.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

/// Free bytes of the filesystem holding `dir` (statvfs), for unprivileged users.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we own from a NUL-terminated path.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove segments whose creating process is gone. Returns what was removed.
pub fn remove_stale_segments() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(segment = %name, pid, "removed a stale shared-memory segment");
            removed.push(e.path());
        }
    }
    removed
}

/// Our segments currently in /dev/shm (for tests and diagnostics).
pub fn list_segments() -> Vec<String> {
    std::fs::read_dir(SHM_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

impl Segment {
    /// Create a new segment for this process, reserve its space and write the header.
    pub fn create(spec: &SegmentSpec) -> Result<Arc<Segment>, RingError> {
        let dir = Path::new(SHM_DIR);
        if spec.token_slots == 0 || spec.act_slots == 0 {
            return Err(RingError::Create {
                name: String::new(),
                message: "each ring needs at least one slot (ring.slots)".into(),
            });
        }
        let (total, rings) = plan(spec);
        if rings
            .iter()
            .any(|r| r.slot_bytes as usize > u32::MAX as usize / 2)
        {
            return Err(RingError::Create {
                name: String::new(),
                message: "slot size over 2 GiB".into(),
            });
        }
        let suffix: u64 = rand::rng().random();
        let name = format!("{PREFIX}{}.{suffix:016x}", std::process::id());
        let no_space = |free: Option<u64>| RingError::NoSpace {
            dir: dir.display().to_string(),
            need_mib: (total as u64).div_ceil(1 << 20),
            free_mib: free.unwrap_or(0) >> 20,
        };
        let free = free_bytes(dir);
        if free.is_some_and(|f| f < total as u64) {
            return Err(no_space(free));
        }
        let shm = ShmemConf::new()
            .os_id(format!("/{name}"))
            .size(total)
            .create()
            .map_err(|e| RingError::Create {
                name: name.clone(),
                message: e.to_string(),
            })?;
        // Reserve the pages now: tmpfs would otherwise hand out SIGBUS on
        // the first write past the free space. (Dropping `shm` unlinks.)
        let path = dir.join(&name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| RingError::Create {
                name: name.clone(),
                message: format!("{}: {e}", path.display()),
            })?;
        // SAFETY: posix_fallocate on an fd we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, total as libc::off_t) };
        if rc == libc::ENOSPC {
            return Err(no_space(free_bytes(dir)));
        } else if rc != 0 {
            return Err(RingError::Create {
                name,
                message: format!(
                    "reserving {total} bytes: {}",
                    std::io::Error::from_raw_os_error(rc)
                ),
            });
        }
        let header = SegmentHeader {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_bytes: HEADER_BYTES as u32,
            total_bytes: total as u64,
            creator_pid: std::process::id(),
            slot_header_bytes: SLOT_HEADER_BYTES as u32,
            rings,
        };
        // SAFETY: the mapping is `total` ≥ HEADER_BYTES bytes, page-aligned,
        // zero-filled, and nobody else knows its name yet.
        unsafe { std::ptr::write_volatile(shm.as_ptr().cast::<SegmentHeader>(), header) };
        Ok(Arc::new(Segment { shm, name, rings }))
    }

    /// Map an existing segment by name and check its header.
    pub fn open(name: &str) -> Result<Arc<Segment>, RingError> {
        let shm = ShmemConf::new()
            .os_id(format!("/{name}"))
            .open()
            .map_err(|e| RingError::Open {
                name: name.into(),
                message: e.to_string(),
            })?;
        let bad = |reason: String| RingError::BadHeader {
            name: name.into(),
            reason,
        };
        let len = shm.len();
        if len < HEADER_BYTES {
            return Err(bad(format!("{len} bytes, shorter than its header")));
        }
        // SAFETY: at least HEADER_BYTES are mapped.
        let h = unsafe { std::ptr::read_volatile(shm.as_ptr().cast::<SegmentHeader>()) };
        if h.magic != MAGIC {
            return Err(bad(format!("magic {:#018x}", h.magic)));
        }
        if h.version != LAYOUT_VERSION {
            return Err(bad(format!(
                "layout version {} (this build speaks {LAYOUT_VERSION}): parent and executive come from different builds",
                h.version
            )));
        }
        if h.total_bytes as usize > len || h.slot_header_bytes as usize != SLOT_HEADER_BYTES {
            return Err(bad(format!(
                "sizes do not match the mapping ({} of {len} bytes)",
                h.total_bytes
            )));
        }
        for r in &h.rings {
            let end_headers =
                r.offset as usize + CONTROL_BYTES + r.slots as usize * SLOT_HEADER_BYTES;
            let end = r.payload_offset as usize + r.slots as usize * r.slot_bytes as usize;
            if r.slots == 0
                || !(r.offset as usize).is_multiple_of(64)
                || !(r.payload_offset as usize).is_multiple_of(PAGE)
                || !(r.slot_bytes as usize).is_multiple_of(PAGE)
                || end_headers > r.payload_offset as usize
                || end > len
            {
                return Err(bad(format!("ring table entry {r:?} does not fit")));
            }
        }
        Ok(Arc::new(Segment {
            shm,
            name: name.into(),
            rings: h.rings,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the segment's file.
    pub fn path(&self) -> PathBuf {
        Path::new(SHM_DIR).join(&self.name)
    }

    pub fn len(&self) -> usize {
        self.shm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shm.len() == 0
    }

    /// Payload bytes of one slot of `ring`.
    pub fn slot_bytes(&self, ring: RingId) -> usize {
        self.rings[ring as usize].slot_bytes as usize
    }

    fn view(&self, ring: RingId) -> View {
        let d = self.rings[ring as usize];
        let base = self.shm.as_ptr();
        // SAFETY: offsets were computed (create) or checked (open) against the length.
        unsafe {
            View {
                control: base.add(d.offset as usize).cast(),
                headers: base
                    .add(d.offset as usize + CONTROL_BYTES)
                    .cast::<SlotHeader>(),
                payload: base.add(d.payload_offset as usize),
                slots: d.slots as u64,
                slot_bytes: d.slot_bytes as usize,
                id: ring,
            }
        }
    }

    pub fn producer(self: &Arc<Self>, ring: RingId) -> Producer {
        Producer {
            _segment: self.clone(),
            view: self.view(ring),
        }
    }

    pub fn consumer(self: &Arc<Self>, ring: RingId) -> Consumer {
        Consumer {
            _segment: self.clone(),
            view: self.view(ring),
        }
    }

    /// Both rings' statistics, as any process mapping the segment sees them.
    pub fn stats(&self) -> [RingStats; 2] {
        [
            self.view(RingId::Tokens).stats(),
            self.view(RingId::Activations).stats(),
        ]
    }

    /// Overwrite the header of `slot` of `ring` with `byte` (fault tests:
    /// a peer that wrote garbage).
    #[cfg(test)]
    pub(crate) fn scribble_slot_header(&self, ring: RingId, slot: usize, byte: u8) {
        let v = self.view(ring);
        let i = slot % v.slots as usize;
        // SAFETY: inside the headers array of the mapping.
        unsafe { std::ptr::write_bytes(v.headers.add(i).cast::<u8>(), byte, SLOT_HEADER_BYTES) };
    }
}
