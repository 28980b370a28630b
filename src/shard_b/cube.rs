//! Shard B's GPU kernels for packed integer weights (CubeCL, reached
//! through burn's backend-extension mechanism).
//!
//! A weight stays in device memory as baked — 4-bit values eight to a
//! `u32` word (element `8w + j` in bits `4j..4j+4`, the store's nibble
//! order read little-endian) or 8-bit values four to a word — made
//! unsigned at load (`i4 ^ 8`, `i8 ^ 0x80`), with one f32 scale and one f32
//! shift (`-scale · zero point`) per group. A weight element is
//! `scale · u + shift`, applied inside the kernels:
//!
//! - [`packed_matvec`] (decode: up to [`MATVEC_MAX_TOKENS`] tokens, one
//!   stream each or a few streams batched): a cube of 32 lanes takes 8
//!   rows, 4 per unit in 2 slots (8 in 1 for tall weights; 8 rows shared
//!   by 4 groups of 32 lanes along rows of ≥ 8192 columns; see [`Matvec`]
//!   and [`DevicePacked::matvec`]); a lane walks its rows' words in 4-word
//!   vectors 32 vectors apart (each group of lanes every 4th run of them),
//!   loading its rows' words for a step before it computes, then the
//!   group's scales and the matching activations (4-float vectors, once
//!   for all its rows and every token), applies the group's scale and
//!   shift once per step, and the lanes' partial sums meet in shared
//!   memory: one unit adds up each output.
//! - [`packed_matvec_q8`] (decode with `packed-q8`, 4-bit weights): the
//!   same walk over int8 activations in blocks of 32 columns (the plan's
//!   producers write them with [`kernels::quantize_block`]); a word's even
//!   and odd nibbles each meet four activation bytes in one `dp4a`, and the
//!   group's scale and shift apply once per block and token.
//! - [`packed_matmul_tiled`] (prefill chunks): 16 × 16 output tiles; per
//!   step of 32 columns the cube stages 16 token rows and 16 weight rows,
//!   dequantized on the way into shared memory, and each unit accumulates
//!   one output.
//!
//! Only 32-bit loads and stores (scalars or 4-wide vectors), f32
//! arithmetic, ≤ 8.5 KiB of shared memory and ≤ 256 units per cube:
//! nothing beyond WebGPU's baseline limits, so the kernels need no vector
//! wider than 4 (burn's own 4-bit matmul needs 8-wide float vectors and
//! fails on devices whose widest is 4) and no optional SPIR-V capability
//! (no f16, no subgroups, no 64-bit). `dp4a` is the device's integer dot
//! product on the SPIR-V route where it reports one, cubecl's emulation
//! otherwise (and always on WGSL).
//!
//! Rows are padded to a multiple of 32 columns on the device (activations
//! too, with zeros), so a word never straddles a row and a group of 32 or
//! more columns (128, or the whole row per channel) always holds whole words.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DispatchDevice, backend_extension};
use burn::tensor::{DType, Device, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::client::Client;
use cubecl::prelude::{CubeCount, CubeDim, TensorArg};

use kernels::{packed_matmul_tiled, packed_matvec, packed_matvec_q8, packed_rows_kernel};

/// Token counts up to this take the matrix-vector kernel; more take the tiled one.
pub const MATVEC_MAX_TOKENS: usize = 8;
/// The token counts the matrix-vector kernel is built for: a launch of
/// `t` tokens takes the first bucket ≥ t (3 run as 4, 5-7 as 8) and is
/// told how many it has, so a new mix of streams needs no new shader.
pub const MATVEC_BUCKETS: [usize; 4] = [1, 2, 4, MATVEC_MAX_TOKENS];
/// Units per row in the matrix-vector kernel.
const LANES: u32 = 32;
/// Rows per cube in the matrix-vector kernel.
const ROWS_PER_CUBE: u32 = 8;
/// Rows each unit of the matrix-vector kernel takes by default (its
/// activations are loaded once for all of them).
pub const ROWS_PER_UNIT: u32 = 4;
/// How the matrix-vector kernel (decode) walks a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matvec {
    /// Rows each unit takes (1, 2, 4; 8 for 1-4 tokens): the activations
    /// are loaded once for all of them.
    pub rows_per_unit: u32,
    /// 4-word steps along its rows a unit loads before it computes (1, 2
    /// or 4; at most 16 rows' words held): loads from memory in flight.
    pub steps: u32,
    /// Groups of 32 lanes sharing a unit's rows along their length (1, 2
    /// or 4, at most the rows per unit): more units for weights with few,
    /// long rows.
    pub split: u32,
}

impl Matvec {
    pub const fn new(rows_per_unit: u32, steps: u32, split: u32) -> Matvec {
        Matvec {
            rows_per_unit,
            steps,
            split,
        }
    }
}

/// Rows at least this long take 8 rows per unit (4 for 5-8 tokens) and 4
/// lane groups per row (a 4-token step of four streams: H200, `down`
/// 2048×8192 18.1 µs against 21.9 with 2 groups, 26.0 with 4 rows and one
/// group, `benches/int4` HYBRID_BENCH_TOKENS=4, 2026-12-01; one token:
/// H100, queued device
/// time, one loan, two runs: `down` 2048×8192 10.8 µs against 13.5 with 2
/// steps ahead (the previous default) and 15.1 with 4 rows, 1 step; the 8B
/// `down` 4096×14336 22.1 against 27.6 and 28.4. More steps ahead, 4, were
/// slower on every shape.
const LONG_ROWS: usize = 8192;
/// Weights with at least this many rows take 8 rows per unit for 1-2
/// tokens (H100, queued device time, this kernel / the one before its
/// load order changed: the int4 lm_head 70 µs against 91 with 4; 8B
/// gate/up 14336×4096 23.2 / 24.8 µs against 24.4 / 26.5; stacked gate+up
/// 16384×2048 15.2 / 15.0 against 17.9 / 17.6; gate/up 8192×2048 went
/// either way between loans (22.7 or 10.3 against 11.1), and the 8B
/// `down`, 4096 long rows, was slower with 8 in both).
const TALL_ROWS: usize = 12_288;
/// Output tile side of the tiled kernel.
const TILE: u32 = 16;
/// Columns per step of the tiled kernel (one shared-memory stage).
const STEP: u32 = 32;
/// Columns are padded on the device to a multiple of this.
pub const COL_ALIGN: usize = 32;
/// Most cubes along one axis of a launch grid.
const MAX_CUBES_PER_AXIS: u32 = 65_535;

/// The kernels (CubeCL's `Tensor` is not burn's).
pub(crate) mod kernels;
/// A packed weight in the kernels' layout: cut into parts on the host,
/// uploaded, multiplied and looked up.
mod weight;

pub use weight::DevicePacked;
pub(crate) use weight::{HostParts, MAX_BINDING_BYTES};

/// `[tokens, kx] × packed [rows, kw words]ᵀ → [tokens, rows]`.
#[backend_extension(Cube, Fusion)]
pub trait PackedOps: Backend {
    #[fusion(dtype = x, shape = Shape::new([x[0], words[0]]))]
    fn packed_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        shifts: FloatTensor<Self>,
        bits: u32,
        group_words: usize,
        matvec: Matvec,
    ) -> FloatTensor<Self>;

    /// Rows `ids` (u32, below the weight's rows) of a packed weight as f32: `[ids, kw · 32/bits]`.
    #[fusion(dtype = DType::F32, shape = Shape::new([ids[0], words[1] * (32 / *bits as usize)]))]
    fn packed_rows(
        ids: IntTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        shifts: FloatTensor<Self>,
        bits: u32,
        group_words: usize,
    ) -> FloatTensor<Self>;
}

/// The matrix-vector kernel's shape for a weight of `rows` rows of
/// `cols_padded` columns: long rows take 8 rows per unit and 4 lane groups
/// per row, tall weights (lm_head) 8 rows per unit, others
/// [`ROWS_PER_UNIT`] (the kernel takes 8 only for 1-4 tokens: at 4
/// tokens on the H200 the stacked gate/up 16384×2048 took 34.1 µs with 8
/// against 43.5 with 4, the int4 lm_head 196 against 306).
pub(crate) fn matvec_for(rows: usize, cols_padded: usize) -> Matvec {
    if cols_padded >= LONG_ROWS {
        Matvec::new(8, 1, 4)
    } else if rows >= TALL_ROWS {
        Matvec::new(8, 1, 1)
    } else {
        Matvec::new(ROWS_PER_UNIT, 1, 1)
    }
}

/// A launch grid of `n` cubes, folded into two axes where one is not enough.
pub(crate) fn grid(n: u32) -> CubeCount {
    let x = n.clamp(1, MAX_CUBES_PER_AXIS);
    CubeCount::Static(x, n.div_ceil(x).max(1), 1)
}

/// The shapes of one packed product launch ([`launch_matmul`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatmulDims {
    pub tokens: usize,
    /// Rows of this weight (part).
    pub rows: usize,
    /// Words per row.
    pub kw: usize,
    /// Activation width (kw · 32/bits).
    pub kx: usize,
    pub group_words: usize,
    pub groups: usize,
    pub bits: u32,
    /// Row length of the output, and the column this part's rows start at.
    pub out_cols: usize,
    pub out_col0: usize,
    /// Add to the output (a residual) instead of writing it.
    pub accumulate: bool,
    /// The activations are in the spread order ([`kernels::spread`]:
    /// what a lane of the matrix-vector kernel reads, its neighbours read
    /// beside it); only the matrix-vector kernel takes it (≤
    /// [`MATVEC_MAX_TOKENS`] tokens).
    pub spread: bool,
}

/// `out[t, col0 + r] (+)= x[t] · w[r]`: the matrix-vector kernel for up to
/// [`MATVEC_MAX_TOKENS`] tokens, the tiled one for more.
///
/// # Safety
///
/// The arguments hold what `d` says: `tokens × kx` activations, `rows × kw`
/// words, `rows × groups` scales and shifts, `tokens × out_cols` outputs
/// with `out_col0 + rows ≤ out_cols`; kx and kw multiples of 4, groups of
/// whole 4-word steps (rows padded to 32 columns, groups ≥ 32 columns).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_matmul(
    client: &Client,
    x: TensorArg,
    words: TensorArg,
    scales: TensorArg,
    shifts: TensorArg,
    out: TensorArg,
    d: MatmulDims,
    matvec: Matvec,
) {
    let MatmulDims {
        tokens,
        rows,
        kw,
        kx,
        group_words,
        groups,
        bits,
        out_cols,
        out_col0,
        accumulate,
        spread,
    } = d;
    if tokens == 0 {
        return;
    }
    if tokens <= MATVEC_MAX_TOKENS {
        let (bucket, rpu, steps, split) = matvec_shape(matvec, tokens);
        let cubes = (rows as u32).div_ceil(ROWS_PER_CUBE);
        // SAFETY: the caller's contract; rows past the end are read
        // clamped and not written.
        unsafe {
            packed_matvec::launch_unchecked(
                client,
                grid(cubes),
                CubeDim::new_2d(LANES, ROWS_PER_CUBE / rpu as u32 * split as u32),
                x,
                words,
                scales,
                shifts,
                out,
                rows as u32,
                (kw / 4) as u32,
                (kx / 4) as u32,
                (group_words / 4) as u32,
                groups as u32,
                out_cols as u32,
                out_col0 as u32,
                tokens as u32,
                bucket,
                bits,
                rpu,
                steps,
                split,
                accumulate,
                spread,
            );
        }
    } else {
        debug_assert!(!spread, "the tiled kernel reads activations in order");
        let count = CubeCount::Static(
            (rows as u32).div_ceil(TILE),
            (tokens as u32).div_ceil(TILE),
            1,
        );
        // SAFETY: as above; staged reads are guarded by the row and
        // token counts, columns by kx (a multiple of STEP).
        unsafe {
            packed_matmul_tiled::launch_unchecked(
                client,
                count,
                CubeDim::new_2d(TILE, TILE),
                x,
                words,
                scales,
                shifts,
                out,
                tokens as u32,
                rows as u32,
                kw as u32,
                kx as u32,
                group_words as u32,
                groups as u32,
                out_cols as u32,
                out_col0 as u32,
                bits,
                accumulate,
            );
        }
    }
}

/// The matrix-vector kernel's comptime shape for `tokens` tokens: the
/// token bucket it is built for, rows per unit, steps ahead and lane
/// groups per row ([`Matvec`] rounded to what the kernel takes).
fn matvec_shape(matvec: Matvec, tokens: usize) -> (usize, usize, usize, usize) {
    let Matvec {
        rows_per_unit,
        steps,
        split,
    } = matvec;
    // Built for a bucket (MATVEC_BUCKETS), told the real count: a new
    // mix of streams does not wait for shaders to be compiled (seconds
    // on a GPU driver).
    let bucket = MATVEC_BUCKETS
        .into_iter()
        .find(|&b| b >= tokens)
        .unwrap_or(MATVEC_MAX_TOKENS);
    let rpu = match rows_per_unit {
        0 | 1 => 1,
        2 | 3 => 2,
        // 8 rows only for 1-4 tokens (rows × tokens accumulators, and
        // as many dot products, per unit).
        r if r < 8 || bucket > 4 => 4,
        _ => 8,
    };
    // At most 16 rows' words held per unit (steps × rows).
    let steps = match steps {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    }
    .min(16 / rpu);
    // Units per row along K: ≤ 256 units a cube (the partial sums meet in
    // 8 KiB of shared memory, 8 / split tokens at a time).
    let split = match split {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    }
    .min(rpu);
    (bucket, rpu, steps, split)
}

/// `out[t, col0 + r] (+)= x[t] · w[r]` for 4-bit weights and int8
/// activations ([`kernels::packed_matvec_q8`]): `xq` `tokens × kx/4`
/// words, `xd` `tokens × kx/16` scales and sums; up to
/// [`MATVEC_MAX_TOKENS`] tokens.
///
/// # Safety
///
/// As [`launch_matmul`], with `d.bits == 4`, `tokens ≤ MATVEC_MAX_TOKENS`
/// and `xq`, `xd` in place of the activations.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_matvec_q8(
    client: &Client,
    xq: TensorArg,
    xd: TensorArg,
    words: TensorArg,
    scales: TensorArg,
    shifts: TensorArg,
    out: TensorArg,
    d: MatmulDims,
    matvec: Matvec,
) {
    debug_assert!(d.bits == 4 && d.tokens <= MATVEC_MAX_TOKENS);
    if d.tokens == 0 {
        return;
    }
    let (bucket, rpu, steps, split) = matvec_shape(matvec, d.tokens);
    let cubes = (d.rows as u32).div_ceil(ROWS_PER_CUBE);
    // SAFETY: the caller's contract; rows past the end are read clamped
    // and not written.
    unsafe {
        packed_matvec_q8::launch_unchecked(
            client,
            grid(cubes),
            CubeDim::new_2d(LANES, ROWS_PER_CUBE / rpu as u32 * split as u32),
            xq,
            xd,
            words,
            scales,
            shifts,
            out,
            d.rows as u32,
            (d.kw / 4) as u32,
            (d.group_words / 4) as u32,
            d.groups as u32,
            d.out_cols as u32,
            d.out_col0 as u32,
            d.tokens as u32,
            bucket,
            rpu,
            steps,
            split,
            d.accumulate,
        );
    }
}

impl PackedOps for CubeBackend {
    fn packed_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        shifts: FloatTensor<Self>,
        bits: u32,
        group_words: usize,
        matvec: Matvec,
    ) -> FloatTensor<Self> {
        let (x, words) = (into_contiguous(x), into_contiguous(words));
        let (scales, shifts) = (into_contiguous(scales), into_contiguous(shifts));
        let (tokens, kx) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (rows, kw) = (words.meta.shape()[0], words.meta.shape()[1]);
        let groups = scales.meta.shape()[1];
        assert_eq!(
            kx,
            kw * (32 / bits as usize),
            "packed matmul: activation width"
        );
        let out = empty_device_dtype(
            x.client.clone(),
            x.device.clone(),
            Shape::new([tokens, rows]),
            DType::F32,
        );
        let client = x.client.clone();
        let dims = MatmulDims {
            tokens,
            rows,
            kw,
            kx,
            group_words,
            groups,
            bits,
            out_cols: rows,
            out_col0: 0,
            accumulate: false,
            spread: false,
        };
        // SAFETY: every size checked above (rows × kw words, rows × groups
        // scales, tokens × kx activations, tokens × rows outputs); kx and
        // kw are multiples of 4 (rows are padded to 32 columns), and groups
        // of whole 4-word steps (a group is ≥ 32 columns).
        unsafe {
            launch_matmul(
                &client,
                x.into_tensor_arg(),
                words.into_tensor_arg(),
                scales.into_tensor_arg(),
                shifts.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                dims,
                matvec,
            );
        }
        out
    }

    fn packed_rows(
        ids: IntTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        shifts: FloatTensor<Self>,
        bits: u32,
        group_words: usize,
    ) -> FloatTensor<Self> {
        let (ids, words) = (into_contiguous(ids), into_contiguous(words));
        let (scales, shifts) = (into_contiguous(scales), into_contiguous(shifts));
        let n = ids.meta.shape()[0];
        let kw = words.meta.shape()[1];
        let groups = scales.meta.shape()[1];
        let out = empty_device_dtype(
            ids.client.clone(),
            ids.device.clone(),
            Shape::new([n, kw * (32 / bits as usize)]),
            DType::F32,
        );
        let client = ids.client.clone();
        let units = (n * kw) as u32;
        // SAFETY: ids are clamped below the row count by the caller
        // (DevicePacked::rows_f32); positions are guarded by n × kw.
        unsafe {
            packed_rows_kernel::launch_unchecked(
                &client,
                grid(units.div_ceil(256)),
                CubeDim::new_1d(256),
                ids.into_tensor_arg(),
                words.into_tensor_arg(),
                scales.into_tensor_arg(),
                shifts.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                n as u32,
                kw as u32,
                group_words as u32,
                groups as u32,
                0,
                u32::MAX,
                bits,
            );
        }
        out
    }
}

/// Whether `device` runs CubeCL kernels (a GPU through wgpu).
pub fn supported(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}
