//! Local replies: what the filter answers itself, in the caller's protocol (a gRPC caller
//! gets HTTP 200 with `grpc-status`, the way gRPC servers fail).

use crate::decide::Reply;
use serde::Serialize;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, GrpcStatusCode};

/// Answers with `status`, `headers` and `body`; the request goes no further.
pub fn http(status: u16, headers: Vec<(&str, &str)>, body: &str) -> Action {
    let _ = hostcalls::send_http_response(u32::from(status), headers, Some(body.as_bytes()));
    Action::Pause
}

/// Sends what `decide` answered.
pub fn send(reply: &Reply) -> Action {
    match reply {
        Reply::Http { status, headers, body } => http(*status, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(), body),
        Reply::Grpc { code, message, metadata } => grpc(*code, message, metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()),
    }
}

/// Answers a JSON body.
pub fn json(status: u16, body: &impl Serialize, extra: Vec<(&str, &str)>) -> Action {
    json_text(status, &serde_json::to_string(body).unwrap_or_default(), extra)
}

/// Answers a JSON body already written out.
pub fn json_text(status: u16, body: &str, extra: Vec<(&str, &str)>) -> Action {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(extra);
    http(status, headers, &format!("{body}\n"))
}

/// Answers a gRPC caller: HTTP 200, `grpc-status: code`, `grpc-message: message`, and
/// `metadata` as headers.
pub fn grpc(code: u8, message: &str, metadata: Vec<(&str, &str)>) -> Action {
    let metadata = metadata.into_iter().map(|(k, v)| (k, v.as_bytes())).collect();
    let _ = hostcalls::send_grpc_response(grpc_code(code), Some(message), metadata);
    Action::Pause
}

/// Answers `{"error": reason}`.
pub fn error(status: u16, reason: &str, extra: Vec<(&str, &str)>) -> Action {
    json(status, &serde_json::json!({"error": reason}), extra)
}

fn grpc_code(code: u8) -> GrpcStatusCode {
    match code {
        0 => GrpcStatusCode::Ok,
        1 => GrpcStatusCode::Cancelled,
        3 => GrpcStatusCode::InvalidArgument,
        4 => GrpcStatusCode::DeadlineExceeded,
        5 => GrpcStatusCode::NotFound,
        6 => GrpcStatusCode::AlreadyExists,
        7 => GrpcStatusCode::PermissionDenied,
        8 => GrpcStatusCode::ResourceExhausted,
        9 => GrpcStatusCode::FailedPrecondition,
        10 => GrpcStatusCode::Aborted,
        11 => GrpcStatusCode::OutOfRange,
        12 => GrpcStatusCode::Unimplemented,
        13 => GrpcStatusCode::Internal,
        14 => GrpcStatusCode::Unavailable,
        15 => GrpcStatusCode::DataLoss,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Unknown,
    }
}
