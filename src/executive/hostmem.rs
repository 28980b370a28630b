//! OpenVINO tensors over memory the caller owns: the zero-copy path from
//! shard A's output into a shared-memory slot.
//!
//! The `openvino` crate (0.11) cannot wrap caller memory, so the tensor is
//! made with openvino-sys's `ov_tensor_create_from_host_ptr` and handed to
//! the crate's `Tensor` type, which frees the tensor object (never the
//! memory) when dropped. The hand-over relies on `Tensor` being exactly one
//! `*mut ov_tensor_t`; that is checked at compile time (size) and at run
//! time (`as_c_ptr` must give the pointer back), so a crate upgrade that
//! changes the layout fails loudly instead of corrupting memory.
//!
//! Invariants for callers: the memory outlives every use of the tensor by
//! OpenVINO; the executive sets a fresh output tensor before each infer, so
//! an old one is never written after its slot was published.

use openvino::Tensor;
use openvino_sys::{ov_element_type_e, ov_shape_t, ov_status_e, ov_tensor_t};

use super::runtime::RuntimeError;

const _: () = assert!(std::mem::size_of::<Tensor>() == std::mem::size_of::<*mut ov_tensor_t>());

/// An f32 tensor of shape `dims` over `buf` (which must hold exactly that
/// many values and be 4-byte aligned).
///
/// # Safety
/// `buf` must stay valid, and not be read or written by anyone else, for
/// as long as OpenVINO may use the tensor (through an infer request it was
/// set on), which may be longer than this borrow.
pub unsafe fn f32_tensor_over(buf: &mut [u8], dims: &[i64]) -> Result<Tensor, RuntimeError> {
    let n: i64 = dims.iter().product();
    if n < 0 || buf.len() != n as usize * 4 {
        return Err(RuntimeError::Call(format!(
            "a tensor of shape {dims:?} needs {} bytes, the buffer has {}",
            n.max(0) * 4,
            buf.len()
        )));
    }
    if !(buf.as_ptr() as usize).is_multiple_of(4) {
        return Err(RuntimeError::Call(
            "tensor memory is not 4-byte aligned".into(),
        ));
    }
    let mut shape = ov_shape_t {
        rank: 0,
        dims: std::ptr::null_mut(),
    };
    // SAFETY: dims is a live slice of `rank` values; shape is ours to free.
    let rc = unsafe { openvino_sys::ov_shape_create(dims.len() as i64, dims.as_ptr(), &mut shape) };
    if rc != ov_status_e::OK {
        return Err(RuntimeError::Call(format!("ov_shape_create: {rc:?}")));
    }
    let mut raw: *mut ov_tensor_t = std::ptr::null_mut();
    // SAFETY: buf is valid for n f32 values (checked); the caller keeps it
    // alive (see the function's contract).
    let rc = unsafe {
        openvino_sys::ov_tensor_create_from_host_ptr(
            ov_element_type_e::F32,
            shape,
            buf.as_mut_ptr().cast(),
            &mut raw,
        )
    };
    // SAFETY: created above; the tensor copied the dims.
    unsafe { openvino_sys::ov_shape_free(&mut shape) };
    if rc != ov_status_e::OK || raw.is_null() {
        return Err(RuntimeError::Call(format!(
            "ov_tensor_create_from_host_ptr: {rc:?}"
        )));
    }
    // SAFETY: same size (asserted above); a single-pointer struct holds the
    // pointer at offset 0, which the check below confirms before the value
    // is used. Its Drop calls ov_tensor_free, right for this tensor.
    let t: Tensor = unsafe { std::mem::transmute::<*mut ov_tensor_t, Tensor>(raw) };
    if t.as_c_ptr() != raw.cast_const() {
        std::mem::forget(t);
        // SAFETY: raw is a live tensor we created and nobody else holds.
        unsafe { openvino_sys::ov_tensor_free(raw) };
        return Err(RuntimeError::Call(
            "the openvino crate's Tensor layout changed: cannot wrap shared memory".into(),
        ));
    }
    Ok(t)
}
