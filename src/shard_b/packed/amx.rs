//! Intel AMX for [`super::Tiled`]'s prompt chunks: the same 4-bit tiles and
//! int8 activations as the VNNI pass, multiplied 16 tokens at a time by the
//! tile unit (`tdpbsud`: signed activation bytes times unsigned weight
//! bytes, 16 × 16 int32 sums per instruction, 64 columns deep).
//!
//! The operands need no transposition. A tile load of 64 bytes holds 16
//! weight rows × 4 columns in its low nibbles and the next 4 columns in
//! its high nibbles, which is exactly two rows of AMX's B operand (each row
//! 16 outputs × 4 consecutive columns); the activations' int8 rows are
//! copied once per chunk into A tiles of 16 rows × 64 columns
//! ([`block_rows`]). Per group of the weight, each 16 × 16 block of sums is
//! stored and scaled as the VNNI pass scales its sums, in the same order,
//! so both give the same result to the bit.
//!
//! Rust has no stable AMX intrinsics (`x86_amx_intrinsics` is unstable in
//! 1.95), so the five instructions used are written as inline assembly.
//! Linux hands a process the tile state only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, kernel 5.16+):
//! [`amx_supported`] asks once, and says no where the CPU, the kernel or
//! `HYBRID_TUI_AMX=off` says no.

/// Tokens of one AMX block (the A operand's and the sums' rows).
pub const AMX_TOKENS: usize = 16;

/// Chunks from this many tokens go through AMX, smaller ones through
/// VNNI passes. On a Xeon's 2 cores (`benches/int4`, the 1B model's
/// down, q+k+v and gate+up shapes) VNNI was 1.14-1.26× faster at 24
/// tokens and 1.01-1.09× at 32; at 48 the two were even (0.99-1.19×), at 64
/// AMX was 1.19-1.29× faster and at 96-128 1.24-1.34×: each group of 128
/// columns makes only two `tdpbsud` per 16 × 16 block of sums before they
/// are stored and scaled with AVX-512, so the scaling, not the tile unit,
/// sets the pace.
pub const AMX_MIN_TOKENS: usize = 48;

/// Token blocks one pass over a group's weights serves (the sums of each
/// stay in their own tile register, tmm0-tmm3).
const BLOCKS_PER_PASS: usize = 4;

/// The setting that turns AMX off (`off`; anything else leaves it on where
/// the CPU has it), for comparisons and in case of trouble.
pub const AMX_ENV: &str = "HYBRID_TUI_AMX";

/// Whether AMX-INT8 runs here: the CPU has AMX-TILE and AMX-INT8 (and
/// AVX-512 for the scaling), Linux granted this process the tile state,
/// and [`AMX_ENV`] does not say `off`. Asked once per process.
pub fn amx_supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let off = std::env::var(AMX_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off"));
        !off && detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID.(EAX=7, ECX=0): EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is present on every x86-64 CPU.
    let leaf = unsafe { __cpuid_count(7, 0) };
    let cpu = leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 25) != 0;
    if !cpu || !super::tiled_supported() {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and
    // only changes which register state this process may use.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Columns per AMX step for groups of `group` (64, or a shorter group).
pub fn amx_step(group: usize) -> usize {
    group.min(64)
}

/// `xq` (`[tokens, cols]` int8) as A tiles into `out`: per block of
/// [`AMX_TOKENS`] rows and per `step` columns, 16 rows of `step` bytes
/// side by side (a tile load's 1 KiB in one piece). Read in place, a
/// tile's 16 rows lie `cols` bytes apart: at 2,048 or 8,192 columns they
/// all fall into one or two sets of the L1 cache and evict each other,
/// and AMX's loads ran ~25% slower for it (measured on a Xeon's 2 cores).
/// Rows past `tokens` up to a whole block hold whatever was there.
pub fn block_rows(xq: &[i8], tokens: usize, cols: usize, step: usize, out: &mut Vec<i8>) {
    let blocks = tokens.div_ceil(AMX_TOKENS);
    let chunks = cols / step;
    out.resize(blocks * AMX_TOKENS * cols, 0);
    for (t, row) in xq[..tokens * cols].chunks_exact(cols).enumerate() {
        let (b, r) = (t / AMX_TOKENS, t % AMX_TOKENS);
        for (kc, part) in row.chunks_exact(step).enumerate() {
            let at = ((b * chunks + kc) * AMX_TOKENS + r) * step;
            out[at..at + step].copy_from_slice(part);
        }
    }
}

/// Whether a weight in groups of `group` columns takes the AMX pass: a
/// group is whole steps of 64 columns, or one step of fewer (a multiple
/// of 8, as every tiled weight's groups are).
pub fn amx_group_fits(group: usize) -> bool {
    group.is_multiple_of(64) || group < 64
}

/// One weight tile (16 rows) over a chunk's tokens.
#[cfg(target_arch = "x86_64")]
pub(super) struct AmxArgs<'a> {
    /// The tile's loads: per 8 columns, 64 bytes (see `Tiled`).
    pub q: &'a [u8],
    /// Per group, the 16 rows' scales (f16 bits).
    pub scales: &'a [u16],
    /// Per group, the 16 rows' zero points (f16 bits), or the one of all.
    pub zps: Result<&'a [u16], f32>,
    /// The activations rounded to int8 in A tiles ([`block_rows`]).
    pub xq: &'a [i8],
    /// Per token and group: the activations' scale and rounded sum.
    pub sx: &'a [f32],
    pub sq: &'a [f32],
    pub cols: usize,
    pub group: usize,
    pub tokens: usize,
}

/// The tile configuration (`ldtilecfg`'s 64 bytes): palette 1; tmm0-tmm3
/// the sums (16 × 16 int32), tmm4 the weights (`step / 4` rows of 64
/// bytes), tmm5 the activations (16 rows of `step` bytes).
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
impl TileConfig {
    fn new(step: usize) -> TileConfig {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..4 {
            (c.colsb[t], c.rows[t]) = (64, 16);
        }
        (c.colsb[4], c.rows[4]) = (64, (step / 4) as u8);
        (c.colsb[5], c.rows[5]) = (step as u16, AMX_TOKENS as u8);
        c
    }
}

/// `asm!` on tile register `tmm{j}` (the sums of block `j`, 0-3): a
/// register's name is part of the instruction's text, so each block has
/// its own instruction.
#[cfg(target_arch = "x86_64")]
macro_rules! on_sums {
    ($j:expr, $pre:literal, $post:literal $(, $($op:tt)*)?) => {
        match $j {
            0 => asm!(concat!($pre, "tmm0", $post) $(, $($op)*)?),
            1 => asm!(concat!($pre, "tmm1", $post) $(, $($op)*)?),
            2 => asm!(concat!($pre, "tmm2", $post) $(, $($op)*)?),
            _ => asm!(concat!($pre, "tmm3", $post) $(, $($op)*)?),
        }
    };
}

/// [`AmxArgs`]' tile into `out` (`[tokens, 16]`), as `pass_vnni` computes
/// it: per group, the integer sums of every token, then
/// `out += (Σ − zp · Σxq) · scale · sx`.
///
/// # Safety
/// [`amx_supported`] must have said yes (AMX-INT8, AVX-512F/BW, the tile
/// state granted), `a.group` must fit ([`amx_group_fits`]), and the slices
/// must hold what [`AmxArgs`] says (checked below).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn tile_amx(a: &AmxArgs<'_>, out: &mut [f32]) {
    use std::arch::asm;
    use std::arch::x86_64::*;
    const ROW: usize = super::TILE_ROWS;
    let (cols, group, tokens) = (a.cols, a.group, a.tokens);
    let groups = cols / group;
    let step = amx_step(group);
    let steps = group / step;
    let blocks = tokens.div_ceil(AMX_TOKENS);
    // B rows (4 columns of the 16 rows each) of one group.
    let b_rows = group / 4;
    assert!(amx_group_fits(group) && group.is_multiple_of(8) && cols.is_multiple_of(group));
    assert!(a.q.len() >= cols / 8 * 64 && a.scales.len() >= groups * ROW);
    if let Ok(z) = a.zps {
        assert!(z.len() >= groups * ROW);
    }
    assert!(a.xq.len() >= blocks * AMX_TOKENS * cols);
    let chunks = cols / step;
    assert!(a.sx.len() >= tokens * groups && a.sq.len() >= tokens * groups);
    assert!(out.len() >= tokens * ROW);
    let cfg = TileConfig::new(step);
    // One group's weights as B rows, and a pass's sums.
    let mut b = vec![0u8; b_rows * 64];
    let mut sums = [0i32; BLOCKS_PER_PASS * AMX_TOKENS * ROW];
    out[..tokens * ROW].fill(0.0);
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack));
        let mask = _mm512_set1_epi8(0x0F);
        for g in 0..groups {
            // Each load's low nibbles, then its high nibbles: two B rows.
            let loads = a.q.as_ptr().add(g * group / 8 * 64);
            for l in 0..group / 8 {
                let w = _mm512_loadu_si512(loads.add(l * 64) as *const __m512i);
                let at = b.as_mut_ptr().add(2 * l * 64);
                _mm512_storeu_si512(at as *mut __m512i, _mm512_and_si512(w, mask));
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), mask);
                _mm512_storeu_si512(at.add(64) as *mut __m512i, hi);
            }
            let f16s = |v: &[u16]| {
                _mm512_cvtph_ps(_mm256_loadu_si256(v.as_ptr().add(g * ROW) as *const __m256i))
            };
            let sc = f16s(a.scales);
            let zp = match a.zps {
                Ok(z) => f16s(z),
                Err(z) => _mm512_set1_ps(z),
            };
            let mut b0 = 0;
            while b0 < blocks {
                let nb = (blocks - b0).min(BLOCKS_PER_PASS);
                for j in 0..nb {
                    on_sums!(j, "tilezero ", "", options(nostack));
                }
                for s in 0..steps {
                    let w = b.as_ptr().add(s * step / 4 * 64);
                    asm!("tileloadd tmm4, [{w} + {stride}*1]", w = in(reg) w,
                        stride = in(reg) 64usize, options(nostack));
                    for j in 0..nb {
                        let kc = (g * group + s * step) / step;
                        let at = ((b0 + j) * chunks + kc) * AMX_TOKENS * step;
                        let x = a.xq.as_ptr().add(at);
                        asm!("tileloadd tmm5, [{x} + {stride}*1]", x = in(reg) x,
                            stride = in(reg) step, options(nostack));
                        on_sums!(j, "tdpbsud ", ", tmm5, tmm4", options(nostack));
                    }
                }
                for j in 0..nb {
                    let at = sums.as_mut_ptr().add(j * AMX_TOKENS * ROW);
                    on_sums!(j, "tilestored [{at} + {stride}*1], ", "", at = in(reg) at,
                        stride = in(reg) 64usize, options(nostack));
                }
                for j in 0..nb {
                    for i in 0..AMX_TOKENS {
                        let t = (b0 + j) * AMX_TOKENS + i;
                        if t >= tokens {
                            break;
                        }
                        let at = t * groups + g;
                        let sum = sums.as_ptr().add((j * AMX_TOKENS + i) * ROW);
                        let sum = _mm512_cvtepi32_ps(_mm512_loadu_si512(sum as *const __m512i));
                        let centered = _mm512_fnmadd_ps(zp, _mm512_set1_ps(a.sq[at]), sum);
                        let s = _mm512_mul_ps(sc, _mm512_set1_ps(a.sx[at]));
                        let o = out.as_mut_ptr().add(t * ROW);
                        _mm512_storeu_ps(o, _mm512_fmadd_ps(centered, s, _mm512_loadu_ps(o)));
                    }
                }
                b0 += nb;
            }
        }
        asm!("tilerelease", options(nostack));
    }
}
