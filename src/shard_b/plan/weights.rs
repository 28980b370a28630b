//! The plan's weights: packed weights as device buffers (parts of at most
//! a binding's bytes), their launches, and the argument helpers.

use cubecl::client::Client;
use cubecl::prelude::{BufferArg, CubeDim, TensorArg};
use cubecl::server::Handle;

use super::super::cube::{
    HostParts, MatmulDims, Matvec, grid, kernels::packed_rows_kernel, launch_matmul,
    launch_matvec_q8, matvec_for,
};
use super::super::packed::Packed;

/// A packed weight as device buffers: parts of at most
/// `MAX_BINDING_BYTES` of words.
pub(super) struct Linear {
    pub(super) rows: usize,
    pub(super) kw: usize,
    pub(super) kx: usize,
    pub(super) group_words: usize,
    pub(super) groups: usize,
    pub(super) bits: u32,
    pub(super) matvec: Matvec,
    pub(super) parts: Vec<Part>,
}

pub(super) struct Part {
    pub(super) start: usize,
    pub(super) rows: usize,
    pub(super) words: Handle,
    pub(super) scales: Handle,
    pub(super) shifts: Handle,
}

pub(super) fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub(super) fn u32_bytes(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// A contiguous 2-D tensor argument over `handle`.
pub(super) fn tensor(handle: &Handle, rows: usize, cols: usize) -> TensorArg {
    // SAFETY: every handle given here holds at least rows × cols elements
    // (the plan sizes its buffers for the rows it launches).
    unsafe { TensorArg::from_raw_parts(handle.clone(), [cols, 1].into(), [rows, cols].into()) }
}

/// A buffer argument of `len` elements over `handle`.
pub(super) fn buffer(handle: &Handle, len: usize) -> BufferArg {
    // SAFETY: as for `tensor`: the handle holds at least `len` elements.
    unsafe { BufferArg::from_raw_parts(handle.clone(), len) }
}

impl Linear {
    /// None when `p` does not fit the kernels without padding.
    pub(super) fn upload(client: &Client, p: &Packed, max_part_bytes: usize) -> Option<Linear> {
        let host = HostParts::split(p, max_part_bytes)?;
        if host.cols_padded != p.cols {
            return None;
        }
        let matvec = matvec_for(p.rows, host.cols_padded);
        let parts = host
            .parts
            .iter()
            .map(|part| Part {
                start: part.start,
                rows: part.rows,
                words: client.create_from_slice(u32_bytes(&part.words)),
                scales: client.create_from_slice(f32_bytes(&part.scales)),
                shifts: client.create_from_slice(f32_bytes(&part.shifts)),
            })
            .collect();
        Some(Linear {
            rows: p.rows,
            kw: host.kw,
            kx: p.cols,
            group_words: host.group_words,
            groups: host.groups,
            bits: p.bits,
            matvec,
            parts,
        })
    }

    /// Columns a word holds: what the producer of this weight's
    /// activations writes the spread order for (0 when not spread).
    pub(super) fn per(&self, spread: bool) -> u32 {
        if spread { 32 / self.bits } else { 0 }
    }

    pub(super) fn resident_bytes(&self) -> usize {
        self.rows * (self.kw * 4 + self.groups * 8)
    }

    /// `out[t, ·] (+)= x[t] · Wᵀ` for `tokens` rows; `out` rows are this
    /// weight's rows wide. With `spread` (≤ `MATVEC_MAX_TOKENS` tokens)
    /// `x` is in the spread order for this weight's bits ([`Linear::per`]).
    pub(super) fn launch(
        &self,
        client: &Client,
        x: &Handle,
        tokens: usize,
        out: &Handle,
        accumulate: bool,
        spread: bool,
    ) -> u64 {
        for part in &self.parts {
            let dims = self.dims(part, tokens, accumulate, spread);
            // SAFETY: `x` holds tokens × kx, `out` tokens × rows (the
            // plan's buffers are sized for the rows it launches), the part
            // its rows × kw words and rows × groups scales and shifts;
            // kx = kw · 32/bits is a multiple of 32 (checked at upload).
            unsafe {
                launch_matmul(
                    client,
                    tensor(x, tokens, self.kx),
                    tensor(&part.words, part.rows, self.kw),
                    tensor(&part.scales, part.rows, self.groups),
                    tensor(&part.shifts, part.rows, self.groups),
                    tensor(out, tokens, self.rows),
                    dims,
                    self.matvec,
                );
            }
        }
        self.parts.len() as u64
    }

    /// The launch shapes of `part` for `tokens` rows of activations.
    fn dims(&self, part: &Part, tokens: usize, accumulate: bool, spread: bool) -> MatmulDims {
        MatmulDims {
            tokens,
            rows: part.rows,
            kw: self.kw,
            kx: self.kx,
            group_words: self.group_words,
            groups: self.groups,
            bits: self.bits,
            out_cols: self.rows,
            out_col0: part.start,
            accumulate,
            spread,
        }
    }

    /// Whether the int8-activation kernel takes this weight (4 bits).
    pub(super) fn takes_q8(&self) -> bool {
        self.bits == 4
    }

    /// [`Linear::launch`] on int8 activations (`xq`, `xd` as
    /// `rms_norm_q8` and `silu_mul_q8` write them) for up to
    /// `MATVEC_MAX_TOKENS` tokens of a 4-bit weight ([`Linear::takes_q8`]).
    pub(super) fn launch_q8(
        &self,
        client: &Client,
        (xq, xd): (&Handle, &Handle),
        tokens: usize,
        out: &Handle,
        accumulate: bool,
    ) -> u64 {
        let blocks = self.kx / 32;
        for part in &self.parts {
            let dims = self.dims(part, tokens, accumulate, false);
            // SAFETY: `xq` holds tokens × kx/4 words and `xd` tokens ×
            // kx/16 floats (the plan's buffers are sized for the rows it
            // launches); the rest as in `launch`; the caller checked the bits.
            unsafe {
                launch_matvec_q8(
                    client,
                    tensor(xq, tokens, blocks * 8),
                    tensor(xd, tokens, blocks * 2),
                    tensor(&part.words, part.rows, self.kw),
                    tensor(&part.scales, part.rows, self.groups),
                    tensor(&part.shifts, part.rows, self.groups),
                    tensor(out, tokens, self.rows),
                    dims,
                    self.matvec,
                );
            }
        }
        self.parts.len() as u64
    }

    /// Rows `ids` (an id buffer of `n`, each below `rows`) as f32 into
    /// `out`: each part writes the ids it holds. Returns the launches.
    pub(super) fn rows_into(&self, client: &Client, ids: &Handle, n: usize, out: &Handle) -> u64 {
        let units = (n * self.kw) as u32;
        for part in &self.parts {
            // SAFETY: ids are checked below the row count by the caller and
            // the kernel reads only the rows of this part; it guards
            // positions by n × kw; out holds n × kx.
            unsafe {
                packed_rows_kernel::launch_unchecked(
                    client,
                    grid(units.div_ceil(256)),
                    CubeDim::new_1d(256),
                    tensor(ids, 1, n),
                    tensor(&part.words, part.rows, self.kw),
                    tensor(&part.scales, part.rows, self.groups),
                    tensor(&part.shifts, part.rows, self.groups),
                    tensor(out, n, self.kx),
                    n as u32,
                    self.kw as u32,
                    self.group_words as u32,
                    self.groups as u32,
                    part.start as u32,
                    part.rows as u32,
                    self.bits,
                );
            }
        }
        self.parts.len() as u64
    }
}
