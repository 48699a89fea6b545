//! The upstream's response body under a fault: cut then reset, replaced or corrupted,
//! piece by piece as Envoy hands it over. The host calls here go straight to
//! the ABI: the SDK's wrappers panic on any status but Ok (which kills the VM), and a
//! stream Envoy has already ended answers otherwise.

use crate::faults::body_change::{BodyChange, Corrupter};
use crate::model::sampling::Sampler;
use crate::faults::truncate::{Cut, Cutter};
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
fn piece(max: usize) -> Vec<u8> {
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
fn set_piece(size: usize, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for its length; the host copies it.
    let _ = unsafe { proxy_set_buffer_bytes(BufferType::HttpResponseBody, 0, size, bytes.as_ptr(), bytes.len()) };
}

/// What a body fault asks of the glue after a piece.
pub enum Step {
    /// Send on what is in hand.
    Continue,
    /// Send on what is in hand, then reset the stream on the worker's timer.
    ContinueThenReset,
    /// Hold what is in hand (it carries the end), and reset the stream on the timer.
    HoldThenReset,
}

/// One response's body fault.
pub enum BodyFault {
    /// Cut after some bytes, then reset.
    Cut(Cutter),
    /// Replaced: the first piece carries the new body, later ones are emptied.
    Replace {
        /// The new body.
        body: String,
        /// Whether the next piece is the first.
        first: bool,
    },
    /// A share of bytes changed.
    Corrupt(Corrupter, Sampler),
}

impl BodyFault {
    /// The fault for a body change; `seed` starts the corrupter's random numbers.
    pub fn changing(change: BodyChange, seed: u64) -> BodyFault {
        match change {
            BodyChange::Replace { body, .. } => BodyFault::Replace { body, first: true },
            BodyChange::Corrupt { ppm } => BodyFault::Corrupt(Corrupter::new(ppm), Sampler::new(seed)),
        }
    }

    /// A piece of `size` bytes is in hand.
    pub fn on_piece(&mut self, size: usize, end_of_stream: bool) -> Step {
        match self {
            BodyFault::Cut(cutter) => match cutter.on_body(size, end_of_stream) {
                Cut::Pass => Step::Continue,
                Cut::PassThenReset { keep } => {
                    let kept = piece(keep);
                    set_piece(size, &kept);
                    Step::ContinueThenReset
                }
                Cut::ResetNow => Step::HoldThenReset,
            },
            BodyFault::Replace { body, first } => {
                set_piece(size, crate::faults::body_change::replaced_piece(body, *first));
                *first = false;
                Step::Continue
            }
            BodyFault::Corrupt(corrupter, random) => {
                let mut bytes = piece(size);
                if corrupter.corrupt(&mut bytes, &mut || random.next_u64()) > 0 {
                    set_piece(size, &bytes);
                }
                Step::Continue
            }
        }
    }

    /// The response's trailers arrived: a cut resets instead of letting them end it.
    pub fn on_trailers(&mut self) -> Step {
        match self {
            BodyFault::Cut(cutter) => {
                cutter.on_trailers();
                Step::HoldThenReset
            }
            _ => Step::Continue,
        }
    }
}
