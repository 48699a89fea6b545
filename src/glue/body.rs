//! The host calls on a stream and its response body that a fault needs: a reset, and
//! reading and replacing the body piece in hand (what [`crate::exchange::BodyFault`] does
//! with them). They go straight to the ABI: the SDK's wrappers panic on any status but Ok (which kills the VM), and a
//! stream Envoy has already ended answers otherwise.

use proxy_wasm::types::{BufferType, Status, StreamType};

extern "C" {
    fn proxy_close_stream(stream_type: StreamType) -> Status;
    fn proxy_get_buffer_bytes(buffer_type: BufferType, start: usize, max_size: usize, data: *mut *mut u8, size: *mut usize) -> Status;
    fn proxy_set_buffer_bytes(buffer_type: BufferType, start: usize, size: usize, data: *const u8, data_size: usize) -> Status;
}

/// Resets the current context's stream (request side: before any answer; response side:
/// mid-answer). Envoy does it once the current callback returns.
pub fn reset(stream: StreamType) {
    // SAFETY: takes no pointers.
    let _ = unsafe { proxy_close_stream(stream) };
}

/// The first `max` bytes of the response body piece in hand.
pub fn piece(max: usize) -> Vec<u8> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the host writes the two out parameters only, and hands over a buffer it
    // allocated through this module's allocator, as the SDK's get_buffer takes it back.
    match unsafe { proxy_get_buffer_bytes(BufferType::HttpResponseBody, 0, max, &mut data, &mut size) } {
        // SAFETY: as above; the buffer is `size` bytes, all of them the value.
        Status::Ok if !data.is_null() => unsafe { Vec::from_raw_parts(data, size, size) },
        _ => Vec::new(),
    }
}

/// Replaces the whole piece in hand (`size` bytes) with `bytes`: Envoy accepts only
/// prepend, replace-all and append; this is replace-all.
pub fn set_piece(size: usize, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for its length; the host copies it.
    let _ = unsafe { proxy_set_buffer_bytes(BufferType::HttpResponseBody, 0, size, bytes.as_ptr(), bytes.len()) };
}
