//! Building a step's kernels before the first step that needs them.

use super::super::ShardBError;
use super::super::cube::MATVEC_BUCKETS;
use super::{DecodePlan, Input, PlanKv, Segment};

impl DecodePlan {
    /// Build the kernels of every size of step: one step of each token
    /// bucket of the matrix-vector kernel (1, 2, 4 and 8 rows; a step of
    /// more rows takes the tiled kernel, whose shader does not depend on
    /// them), launched over throwaway caches and waited for. A GPU driver
    /// compiles a kernel on its first launch (0.6-4 s a bucket on the
    /// H200's WGSL path), so without this the first prompt of a new size,
    /// or four streams dropping to two or one, stalls in the middle of an
    /// answer. Returns the row counts built.
    pub fn warm_up(&mut self) -> Result<Vec<usize>, ShardBError> {
        // The caches and the step buffers for the largest step once, the
        // smaller steps over the first of them.
        let kvs: Vec<PlanKv> = (0..MATVEC_BUCKETS[MATVEC_BUCKETS.len() - 1])
            .map(|_| self.new_kv(1))
            .collect();
        let x = vec![0.0f32; kvs.len() * self.spec.hidden_size];
        for &rows in MATVEC_BUCKETS.iter().rev() {
            let segments: Vec<Segment> = kvs[..rows]
                .iter()
                .map(|kv| Segment {
                    kv,
                    pos: 0,
                    rows: 1,
                })
                .collect();
            let hidden = &x[..rows * self.spec.hidden_size];
            let layout = self.prepare(Input::Hidden(hidden), &segments)?;
            let Some(sc) = self.scratch.as_ref() else {
                return Err(ShardBError::Device("no scratch buffers".into()));
            };
            self.encode(sc, &layout);
            super::super::device::block_on(self.client.sync())
                .map_err(|e| ShardBError::Device(e.to_string()))?;
        }
        Ok(MATVEC_BUCKETS.to_vec())
    }
}
