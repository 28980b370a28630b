//! A packed weight in the kernels' layout: on the host cut by rows into
//! parts that fit one binding ([`HostParts`]), and in device memory
//! ([`DevicePacked`]: burn tensors, multiplied and looked up through
//! [`PackedOps`]).

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::super::packed::Packed;
use super::{COL_ALIGN, Matvec, PackedOps, matvec_for};

/// Most bytes of words one launch binds: WebGPU's guaranteed
/// `maxStorageBufferBindingSize` (a bigger binding fails on devices that
/// keep that default — lavapipe does), so larger weights are split by rows.
pub(crate) const MAX_BINDING_BYTES: usize = 128 << 20;

/// Rows `[start, start + rows)` of a packed weight, in device memory.
struct Part {
    start: usize,
    rows: usize,
    words: Tensor<2, Int>,
    scales: Tensor<2>,
    shifts: Tensor<2>,
}

/// A packed weight in the kernels' layout, on the host, cut by rows into
/// parts of at most so many bytes of words (a binding's limit).
pub(crate) struct HostParts {
    pub cols_padded: usize,
    /// Words per row.
    pub kw: usize,
    pub group_words: usize,
    pub groups: usize,
    pub parts: Vec<HostPart>,
}

/// Rows `[start, start + rows)` of a [`HostParts`].
pub(crate) struct HostPart {
    pub start: usize,
    pub rows: usize,
    pub words: Vec<u32>,
    pub scales: Vec<f32>,
    pub shifts: Vec<f32>,
}

impl HostParts {
    /// None when `p`'s groups do not hold whole padded words.
    pub fn split(p: &Packed, max_bytes: usize) -> Option<HostParts> {
        let layout = p.device_layout(COL_ALIGN)?;
        let per = 32 / p.bits as usize;
        let kw = layout.cols_padded / per;
        let groups = layout.scales.len() / p.rows;
        let rows_per_part = (max_bytes / (4 * kw)).max(1);
        let (mut words, mut scales, mut shifts) = (layout.words, layout.scales, layout.shifts);
        // Parts from the last: each takes its rows off the end of the
        // layout's vectors (the first part, the only one of most weights,
        // keeps them without a copy).
        let mut parts = Vec::new();
        let mut end = p.rows;
        while end > 0 {
            let start = (end - 1) / rows_per_part * rows_per_part;
            parts.push(HostPart {
                start,
                rows: end - start,
                words: words.split_off(start * kw),
                scales: scales.split_off(start * groups),
                shifts: shifts.split_off(start * groups),
            });
            end = start;
        }
        parts.reverse();
        Some(HostParts {
            cols_padded: layout.cols_padded,
            kw,
            group_words: layout.group_cols / per,
            groups,
            parts,
        })
    }
}

/// A packed weight in device memory.
pub struct DevicePacked {
    pub rows: usize,
    pub cols: usize,
    /// Columns after padding to [`COL_ALIGN`].
    pub cols_padded: usize,
    pub bits: u32,
    group_words: usize,
    groups: usize,
    parts: Vec<Part>,
}

impl DevicePacked {
    /// Upload `p` to `device` (a CubeCL device, see [`supported`]). None
    /// when its groups do not hold whole padded words (a group smaller than
    /// a row that is not a multiple of 32 columns).
    pub fn upload(p: &Packed, device: &Device) -> Option<DevicePacked> {
        Self::upload_split(p, device, MAX_BINDING_BYTES)
    }

    /// [`DevicePacked::upload`], in parts of at most `max_bytes` of words
    /// (at least one row each).
    pub fn upload_split(p: &Packed, device: &Device, max_bytes: usize) -> Option<DevicePacked> {
        let host = HostParts::split(p, max_bytes)?;
        let (groups, kw) = (host.groups, host.kw);
        let parts = host
            .parts
            .into_iter()
            .map(|part| {
                let rows = part.rows;
                let f32s = |v: Vec<f32>| {
                    Tensor::<2>::from_data(TensorData::new(v, [rows, groups]), (device, DType::F32))
                };
                Part {
                    start: part.start,
                    rows,
                    words: Tensor::<2, Int>::from_data(
                        TensorData::new(part.words, [rows, kw]),
                        (device, DType::U32),
                    ),
                    scales: f32s(part.scales),
                    shifts: f32s(part.shifts),
                }
            })
            .collect();
        Some(DevicePacked {
            rows: p.rows,
            cols: p.cols,
            cols_padded: host.cols_padded,
            bits: p.bits,
            group_words: host.group_words,
            groups,
            parts,
        })
    }

    /// Bytes resident on the device: the words, scales and shifts.
    pub fn resident_bytes(&self) -> usize {
        self.rows * self.cols_padded * self.bits as usize / 8 + 8 * self.rows * self.groups
    }

    /// `x`: `[tokens, cols]` f32 → `[tokens, rows]` f32.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        self.matmul_with(x, self.matvec())
    }

    /// The matrix-vector kernel's shape [`DevicePacked::matmul`] uses.
    pub fn matvec(&self) -> Matvec {
        matvec_for(self.rows, self.cols_padded)
    }

    /// [`DevicePacked::matmul`] with another shape of the matrix-vector
    /// kernel (the benchmark and the tests compare them).
    pub fn matmul_with(&self, x: Tensor<2>, matvec: Matvec) -> Tensor<2> {
        let [tokens, cols] = x.dims();
        assert_eq!(cols, self.cols, "packed matmul: activation width");
        let x = if self.cols_padded > cols {
            let pad =
                Tensor::<2>::zeros([tokens, self.cols_padded - cols], (&x.device(), DType::F32));
            Tensor::cat(vec![x, pad], 1)
        } else {
            x
        };
        let mut outs: Vec<Tensor<2>> = self
            .parts
            .iter()
            .map(|part| {
                Tensor::from_dispatch(<Dispatch as PackedOps>::packed_matmul(
                    x.clone().into_dispatch(),
                    part.words.clone().into_dispatch(),
                    part.scales.clone().into_dispatch(),
                    part.shifts.clone().into_dispatch(),
                    self.bits,
                    self.group_words,
                    matvec,
                ))
            })
            .collect();
        match outs.len() {
            1 => outs.remove(0),
            _ => Tensor::cat(outs, 1),
        }
    }

    /// Rows `ids` as f32 (embedding lookups), dequantized on the device.
    pub fn rows_f32(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        let n = ids.dims()[0];
        let ids = ids.clamp(0, self.rows as i64 - 1);
        let lookup = |part: &Part, ids: Tensor<1, Int>| -> Tensor<2> {
            Tensor::from_dispatch(<Dispatch as PackedOps>::packed_rows(
                ids.cast(DType::U32).into_dispatch(),
                part.words.clone().into_dispatch(),
                part.scales.clone().into_dispatch(),
                part.shifts.clone().into_dispatch(),
                self.bits,
                self.group_words,
            ))
        };
        let rows = match self.parts.as_slice() {
            [one] => lookup(one, ids),
            parts => {
                // Each part looks up the ids it holds (others clamped into
                // it and masked out); the parts' rows are added.
                let mut sum = Tensor::<2>::zeros([n, self.cols_padded], &ids.device());
                for part in parts {
                    let (lo, hi) = (part.start as i64, (part.start + part.rows) as i64);
                    let inside = ids
                        .clone()
                        .greater_equal_elem(lo)
                        .bool_and(ids.clone().lower_elem(hi))
                        .float()
                        .unsqueeze_dim::<2>(1);
                    let local = ids.clone().sub_scalar(lo).clamp(0, part.rows as i64 - 1);
                    sum = sum + lookup(part, local) * inside;
                }
                sum
            }
        };
        if self.cols_padded > self.cols {
            rows.slice([0..n, 0..self.cols])
        } else {
            rows
        }
    }
}
