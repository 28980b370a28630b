//! A step's launches, in order (the plan's module docs draw them).

use cubecl::prelude::{CubeCount, CubeDim};
use cubecl::server::Handle;

use super::super::cube::{MATVEC_MAX_TOKENS, grid};
use super::kernels::{self, ATTN_UNITS, ROW_UNITS};
use super::profile::Timer;
use super::weights::{Linear, buffer};
use super::{DecodePlan, Layout, Scratch};

impl DecodePlan {
    /// Launches one step takes.
    pub(super) fn launches_per_step(&self, layout: &Layout) -> u64 {
        let parts = |l: &Linear| l.parts.len() as u64;
        let attention = layout.banks.len() as u64 * if layout.chunked() { 3 } else { 2 };
        let per_layer: u64 = self
            .layers
            .first()
            .map(|l| {
                3 + parts(&l.qkv) + parts(&l.o) + parts(&l.gate_up) + parts(&l.down) + attention
            })
            .unwrap_or(0);
        let table = self.embed.as_ref().unwrap_or(&self.head);
        u64::from(layout.tokens) * parts(table)
            + per_layer * self.layers.len() as u64
            + 1
            + parts(&self.head)
    }

    /// Issue the step's launches; returns how many.
    pub(super) fn encode(&self, sc: &Scratch, layout: &Layout) -> u64 {
        let mut t = Timer::new(&self.client, false);
        self.encode_timed(sc, layout, &mut t);
        t.launches
    }

    /// [`DecodePlan::encode`] through `t` (which may time each launch).
    pub(super) fn encode_timed(&self, sc: &Scratch, layout: &Layout, t: &mut Timer) {
        let s = &self.spec;
        let c = &self.client;
        let (rows, segments) = (layout.rows, layout.segments);
        let (h, nh, nkv, hd) = (s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim);
        let (qd, kvd, inter) = (s.q_dim(), s.kv_dim(), s.intermediate_size);
        let eps = s.rms_norm_eps as f32;
        if layout.tokens {
            let table = self.embed.as_ref().unwrap_or(&self.head);
            t.run("embedding", || table.rows_into(c, &sc.ids, rows, &sc.x));
        }
        // Decode-sized steps take the matrix-vector kernel, which reads its
        // activations in the spread order their producers write.
        let spread = layout.chunked();
        let norm = |x: &Handle, w: &Handle, out: &Handle, n: usize, gather: bool, per: u32| {
            // SAFETY: x and out hold ≥ n rows of h (gathered rows are
            // indices below the step's rows), w holds h.
            unsafe {
                kernels::rms_norm::launch_unchecked(
                    c,
                    CubeCount::Static(n as u32, 1, 1),
                    CubeDim::new_1d(ROW_UNITS),
                    buffer(x, rows * h),
                    buffer(w, h),
                    buffer(&sc.sel, segments),
                    buffer(out, n * h),
                    h as u32,
                    eps,
                    gather,
                    per,
                );
            }
            1
        };
        // Int8 activations (packed-q8) for decode steps' 4-bit projections.
        let q8 = self.int8_activations && spread;
        let (nq, oq, aq) = ((&sc.nq, &sc.nd), (&sc.oq, &sc.od), (&sc.aq, &sc.ad));
        let norm_q8 = |x: &Handle, w: &Handle, n: usize, gather: bool| {
            // SAFETY: x holds ≥ n rows of h (gathered rows are indices
            // below the step's rows), w holds h; nq/nd hold
            // MATVEC_MAX_TOKENS ≥ n rows of blocks.
            unsafe {
                kernels::rms_norm_q8::launch_unchecked(
                    c,
                    CubeCount::Static(n as u32, 1, 1),
                    CubeDim::new_1d(ROW_UNITS),
                    buffer(x, rows * h),
                    buffer(w, h),
                    buffer(&sc.sel, segments),
                    buffer(nq.0, n * h / 4),
                    buffer(nq.1, n * h / 16),
                    h as u32,
                    eps,
                    gather,
                );
            }
            1
        };
        // An rms_norm of the residual rows `sc.x` (the `sel` rows where
        // `gather`) and the projection `lin` that reads it: in
        // int8 blocks where int8 activations are asked for, the step is
        // decode-sized and the weight takes them; else in f32, through
        // `normed` (in the spread order for decode-sized steps).
        let norm_project = |t: &mut Timer,
                            name: &'static str,
                            w: &Handle,
                            lin: &Linear,
                            n: usize,
                            gather: bool,
                            normed: &Handle,
                            out: &Handle,
                            spread: bool| {
            if self.int8_activations && spread && lin.takes_q8() {
                t.run("rms_norm", || norm_q8(&sc.x, w, n, gather));
                t.run(name, || lin.launch_q8(c, nq, n, out, false));
            } else {
                let per = lin.per(spread);
                t.run("rms_norm", || norm(&sc.x, w, normed, n, gather, per));
                t.run(name, || lin.launch(c, normed, n, out, false, spread));
            }
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let window = s.sliding_window.unwrap_or(0) as u32;
        let cap = self.pool.capacity;
        let direct = !layout.chunked();
        let (chunks, chunk) = if direct {
            (1, cap)
        } else {
            (cap.div_ceil(self.attention_chunk), self.attention_chunk)
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let (w, qkv) = (&layer.in_norm, &layer.qkv);
            norm_project(t, "qkv", w, qkv, rows, false, &sc.n, &sc.qkv, spread);
            let attn_per = layer.o.per(spread);
            // q8 implies decode-sized steps: chunked attention, combined.
            let o_q8 = q8 && layer.o.takes_q8();
            let mut list0 = 0usize;
            for &(bank, n) in &layout.banks {
                let bank = &self.pool.banks[bank];
                let (kc, vc) = (&bank.keys[li], &bank.values[li]);
                let cache = bank.slots * nkv * cap * hd;
                // SAFETY: order lists rows below the step's rows; each
                // row's slot is below its bank's slots and its position
                // below the pool's capacity (checked in `step`) and the
                // RoPE tables' length.
                t.run("rope_cache", || unsafe {
                    kernels::rope_cache::launch_unchecked(
                        c,
                        CubeCount::Static(n as u32, 1, 1),
                        CubeDim::new_1d(ROW_UNITS),
                        buffer(&sc.qkv, rows * (qd + 2 * kvd)),
                        buffer(&layer.qkv_bias, qd + 2 * kvd),
                        buffer(&sc.pos, rows),
                        buffer(&sc.order, rows),
                        buffer(&sc.slots, rows),
                        buffer(&self.cos, self.positions * hd / 2),
                        buffer(&self.sin, self.positions * hd / 2),
                        buffer(&sc.q, rows * qd),
                        buffer(kc, cache),
                        buffer(vc, cache),
                        list0 as u32,
                        nh as u32,
                        nkv as u32,
                        cap as u32,
                        hd,
                    );
                    1
                });
                // SAFETY: as above; partial holds the step's rows × heads
                // × the scratch's chunks × (hd + 2) when chunked, and is
                // only written then.
                t.run("attention", || unsafe {
                    kernels::attention::launch_unchecked(
                        c,
                        CubeCount::Static(nkv as u32, n as u32, chunks as u32),
                        CubeDim::new_1d(ATTN_UNITS),
                        buffer(&sc.q, rows * qd),
                        buffer(&sc.pos, rows),
                        buffer(&sc.order, rows),
                        buffer(&sc.slots, rows),
                        buffer(kc, cache),
                        buffer(vc, cache),
                        buffer(&sc.attn, rows * qd),
                        buffer(&sc.partial, sc.partial_len),
                        list0 as u32,
                        nkv as u32,
                        cap as u32,
                        window,
                        chunk as u32,
                        sc.chunks as u32,
                        scale,
                        hd,
                        nh / nkv,
                        direct,
                        attn_per,
                    );
                    1
                });
                if o_q8 {
                    // SAFETY: as above; oq/od hold MATVEC_MAX_TOKENS ≥
                    // rows rows of qd / 32 blocks.
                    t.run("attention", || unsafe {
                        kernels::attention_combine_q8::launch_unchecked(
                            c,
                            CubeCount::Static(nh as u32, n as u32, 1),
                            CubeDim::new_1d(hd as u32),
                            buffer(&sc.partial, sc.partial_len),
                            buffer(&sc.pos, rows),
                            buffer(&sc.order, rows),
                            buffer(oq.0, rows * qd / 4),
                            buffer(oq.1, rows * qd / 16),
                            list0 as u32,
                            nh as u32,
                            chunk as u32,
                            sc.chunks as u32,
                            hd,
                        );
                        1
                    });
                } else if !direct {
                    // SAFETY: as above.
                    t.run("attention", || unsafe {
                        kernels::attention_combine::launch_unchecked(
                            c,
                            CubeCount::Static(nh as u32, n as u32, 1),
                            CubeDim::new_1d(hd as u32),
                            buffer(&sc.partial, sc.partial_len),
                            buffer(&sc.pos, rows),
                            buffer(&sc.order, rows),
                            buffer(&sc.attn, rows * qd),
                            list0 as u32,
                            nh as u32,
                            chunk as u32,
                            sc.chunks as u32,
                            hd,
                            attn_per,
                        );
                        1
                    });
                }
                list0 += n;
            }
            if o_q8 {
                t.run("o", || layer.o.launch_q8(c, oq, rows, &sc.x, true));
            } else {
                t.run("o", || {
                    layer.o.launch(c, &sc.attn, rows, &sc.x, true, spread)
                });
            }
            let (w, gu) = (&layer.post_norm, &layer.gate_up);
            norm_project(t, "gate_up", w, gu, rows, false, &sc.n, &sc.gu, spread);
            if q8 && layer.down.takes_q8() {
                let blocks = (rows * inter / 32) as u32;
                // SAFETY: gu holds rows × 2·inter; aq/ad hold
                // MATVEC_MAX_TOKENS ≥ rows rows of blocks; the kernel
                // guards its index by blocks.
                t.run("silu_mul", || unsafe {
                    kernels::silu_mul_q8::launch_unchecked(
                        c,
                        grid(blocks.div_ceil(ROW_UNITS / 32)),
                        CubeDim::new_1d(ROW_UNITS),
                        buffer(&sc.gu, rows * 2 * inter),
                        buffer(aq.0, rows * inter / 4),
                        buffer(aq.1, rows * inter / 16),
                        blocks,
                        inter as u32,
                    );
                    1
                });
                t.run("down", || layer.down.launch_q8(c, aq, rows, &sc.x, true));
            } else {
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
                        layer.down.per(spread),
                    );
                    1
                });
                t.run("down", || {
                    layer.down.launch(c, &sc.act, rows, &sc.x, true, spread)
                });
            }
        }
        // The last rows are few even after a prefill chunk.
        let head_spread = segments <= MATVEC_MAX_TOKENS;
        let (w, head) = (&self.norm, &self.head);
        norm_project(
            t,
            "lm_head",
            w,
            head,
            segments,
            true,
            &sc.last,
            &sc.logits,
            head_spread,
        );
    }
}
