//! A step's launches, in order (the plan's module docs draw them).

use cubecl::prelude::{CubeCount, CubeDim};
use cubecl::server::Handle;

use super::super::cube::{MATVEC_MAX_TOKENS, grid};
use super::kernels::{self, ATTN_UNITS, ROW_UNITS};
use super::profile::Timer;
use super::weights::{Linear, buffer};
use super::{DecodePlan, Scratch, Segment};

impl DecodePlan {
    /// Launches one step takes.
    pub(super) fn launches_per_step(&self, segments: &[Segment<'_>], tokens: bool) -> u64 {
        let parts = |l: &Linear| l.parts.len() as u64;
        let attention = segments
            .iter()
            .map(|g| if g.rows > MATVEC_MAX_TOKENS { 2 } else { 3 })
            .sum::<u64>();
        let per_layer: u64 = self
            .layers
            .first()
            .map(|l| {
                3 + parts(&l.qkv) + parts(&l.o) + parts(&l.gate_up) + parts(&l.down) + attention
            })
            .unwrap_or(0);
        let table = self.embed.as_ref().unwrap_or(&self.head);
        u64::from(tokens) * parts(table)
            + per_layer * self.layers.len() as u64
            + 1
            + parts(&self.head)
    }

    /// Issue the step's launches; returns how many.
    pub(super) fn encode(&self, sc: &Scratch, segments: &[Segment<'_>], tokens: bool) -> u64 {
        let mut t = Timer::new(&self.client, false);
        self.encode_timed(sc, segments, tokens, &mut t);
        t.launches
    }

    /// [`DecodePlan::encode`] through `t` (which may time each launch).
    pub(super) fn encode_timed(
        &self,
        sc: &Scratch,
        segments: &[Segment<'_>],
        tokens: bool,
        t: &mut Timer,
    ) {
        let s = &self.spec;
        let c = &self.client;
        let rows: usize = segments.iter().map(|g| g.rows).sum();
        let (h, nh, nkv, hd) = (s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim);
        let (qd, kvd, inter) = (s.q_dim(), s.kv_dim(), s.intermediate_size);
        let eps = s.rms_norm_eps as f32;
        if tokens {
            let table = self.embed.as_ref().unwrap_or(&self.head);
            t.run("embedding", || table.rows_into(c, &sc.ids, rows, &sc.x));
        }
        let norm = |x: &Handle, w: &Handle, out: &Handle, n: usize, gather: bool| {
            // SAFETY: x and out hold ≥ n rows of h (gathered rows are
            // indices below the step's rows), w holds h.
            unsafe {
                kernels::rms_norm::launch_unchecked(
                    c,
                    CubeCount::Static(n as u32, 1, 1),
                    CubeDim::new_1d(ROW_UNITS),
                    buffer(x, rows * h),
                    buffer(w, h),
                    buffer(&sc.sel, segments.len()),
                    buffer(out, n * h),
                    h as u32,
                    eps,
                    gather,
                );
            }
            1
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let window = s.sliding_window.unwrap_or(0) as u32;
        for (li, layer) in self.layers.iter().enumerate() {
            t.run("rms_norm", || {
                norm(&sc.x, &layer.in_norm, &sc.n, rows, false)
            });
            t.run("qkv", || layer.qkv.launch(c, &sc.n, rows, &sc.qkv, false));
            let (mut row0, mut prow0) = (0usize, 0usize);
            for g in segments {
                let (kc, vc) = (&g.kv.keys[li], &g.kv.values[li]);
                let cache = nkv * g.kv.capacity * hd;
                // SAFETY: rows row0..row0+g.rows of qkv, pos and q exist;
                // positions are below the cache capacity (checked in
                // `step`) and the RoPE tables' length.
                t.run("rope_cache", || unsafe {
                    kernels::rope_cache::launch_unchecked(
                        c,
                        CubeCount::Static(g.rows as u32, 1, 1),
                        CubeDim::new_1d(ROW_UNITS),
                        buffer(&sc.qkv, rows * (qd + 2 * kvd)),
                        buffer(&layer.qkv_bias, qd + 2 * kvd),
                        buffer(&sc.pos, rows),
                        buffer(&self.cos, self.positions * hd / 2),
                        buffer(&self.sin, self.positions * hd / 2),
                        buffer(&sc.q, rows * qd),
                        buffer(kc, cache),
                        buffer(vc, cache),
                        row0 as u32,
                        nh as u32,
                        nkv as u32,
                        g.kv.capacity as u32,
                        hd,
                    );
                    1
                });
                let direct = g.rows > MATVEC_MAX_TOKENS;
                let chunks = if direct {
                    1
                } else {
                    g.kv.capacity.div_ceil(self.attention_chunk)
                };
                let chunk = if direct {
                    g.kv.capacity
                } else {
                    self.attention_chunk
                };
                // SAFETY: as above; partial holds the step's chunked rows
                // (prow0 counts them) × heads × the scratch's chunks ×
                // (hd + 2), and is only written for a chunked segment.
                t.run("attention", || unsafe {
                    kernels::attention::launch_unchecked(
                        c,
                        CubeCount::Static(nh as u32, g.rows as u32, chunks as u32),
                        CubeDim::new_1d(ATTN_UNITS),
                        buffer(&sc.q, rows * qd),
                        buffer(&sc.pos, rows),
                        buffer(kc, cache),
                        buffer(vc, cache),
                        buffer(&sc.attn, rows * qd),
                        buffer(&sc.partial, sc.partial_len),
                        row0 as u32,
                        prow0 as u32,
                        nh as u32,
                        (nh / nkv) as u32,
                        g.kv.capacity as u32,
                        window,
                        chunk as u32,
                        sc.chunks as u32,
                        scale,
                        hd,
                        direct,
                    );
                    1
                });
                if !direct {
                    // SAFETY: as above.
                    t.run("attention", || unsafe {
                        kernels::attention_combine::launch_unchecked(
                            c,
                            CubeCount::Static(nh as u32, g.rows as u32, 1),
                            CubeDim::new_1d(hd as u32),
                            buffer(&sc.partial, sc.partial_len),
                            buffer(&sc.pos, rows),
                            buffer(&sc.attn, rows * qd),
                            row0 as u32,
                            prow0 as u32,
                            nh as u32,
                            chunk as u32,
                            sc.chunks as u32,
                            hd,
                        );
                        1
                    });
                    prow0 += g.rows;
                }
                row0 += g.rows;
            }
            t.run("o", || layer.o.launch(c, &sc.attn, rows, &sc.x, true));
            t.run("rms_norm", || {
                norm(&sc.x, &layer.post_norm, &sc.n, rows, false)
            });
            t.run("gate_up", || {
                layer.gate_up.launch(c, &sc.n, rows, &sc.gu, false)
            });
            let n = (rows * inter) as u32;
            // SAFETY: gu holds rows × 2·inter, act rows × inter; the
            // kernel guards its index by n.
            t.run("silu_mul", || unsafe {
                kernels::silu_mul::launch_unchecked(
                    c,
                    grid(n.div_ceil(256)),
                    CubeDim::new_1d(256),
                    buffer(&sc.gu, rows * 2 * inter),
                    buffer(&sc.act, rows * inter),
                    n,
                    inter as u32,
                );
                1
            });
            t.run("down", || layer.down.launch(c, &sc.act, rows, &sc.x, true));
        }
        t.run("rms_norm", || {
            norm(&sc.x, &self.norm, &sc.last, segments.len(), true)
        });
        t.run("lm_head", || {
            self.head
                .launch(c, &sc.last, segments.len(), &sc.logits, false)
        });
    }
}
