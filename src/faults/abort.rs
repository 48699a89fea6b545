//! The `abort` fault: the request is answered locally with an HTTP status; gRPC callers
//! get HTTP 200 with `grpc-status` (the code given, or the one the gRPC spec maps the
//! status to). The query policy `statusResponse` is one too.

use crate::faults::Kind;
use crate::model::values::{from_object, GrpcCode, HttpStatus};
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// An abort: `{"status": 503, "grpc_status": 14}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Abort {
    /// The HTTP status.
    pub status: HttpStatus,
    /// The gRPC status code for gRPC callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<GrpcCode>,
}

impl Kind for Abort {
    const NAME: &'static str = "abort";
    const LABEL: &'static str = "abort";
    const STAT: Stat = Stat::AbortsInjected;
}

/// The abort as written: a status, a gRPC code, or both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortSpec {
    status: Option<HttpStatus>,
    grpc_status: Option<GrpcCode>,
}

impl TryFrom<AbortSpec> for Abort {
    type Error = &'static str;
    fn try_from(spec: AbortSpec) -> Result<Abort, &'static str> {
        if spec.status.is_none() && spec.grpc_status.is_none() {
            return Err("needs 'status' (HTTP) and/or 'grpc_status'");
        }
        // An abort fails the request; a gRPC caller told OK would count a failure as a success.
        if spec.grpc_status == Some(GrpcCode(0)) {
            return Err("grpc_status: 0 (OK) is not a failure; give a code from 1 to 16, such as 14 (UNAVAILABLE)");
        }
        Ok(Abort { status: spec.status.unwrap_or(HttpStatus(503)), grpc_status: spec.grpc_status })
    }
}
from_object!(Abort, AbortSpec);

impl Abort {
    /// An abort with an HTTP status only, as the query's `status=` sets it.
    pub fn status(status: HttpStatus) -> Abort {
        Abort { status, grpc_status: None }
    }
}
