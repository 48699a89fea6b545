//! The `response` fault: the request is answered locally with a canned response (status,
//! headers, body); gRPC callers get `grpc_status` if one is set. The query policy
//! `simpleResponse` answers with the plugin configuration's canned response.

use crate::faults::Kind;
use crate::model::values::{self, from_object, GrpcCode, HttpStatus, Text};
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// A canned response: `{"status": 201, "headers": {"x-a": "b"}, "body": "hi"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Response {
    /// Its status.
    pub status: HttpStatus,
    /// Its headers.
    #[serde(with = "values::pairs")]
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
    /// The gRPC status code for gRPC callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<GrpcCode>,
}

impl Kind for Response {
    const NAME: &'static str = "response";
    const LABEL: &'static str = "response";
    const STAT: Stat = Stat::ResponsesInjected;
}

/// The response as written; every member optional (200, no headers, empty body).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    status: Option<HttpStatus>,
    #[serde(default, with = "values::pairs")]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Text,
    grpc_status: Option<GrpcCode>,
}

impl TryFrom<ResponseSpec> for Response {
    type Error = &'static str;
    fn try_from(spec: ResponseSpec) -> Result<Response, &'static str> {
        let status = spec.status.unwrap_or(HttpStatus(200));
        Ok(Response { status, headers: spec.headers, body: spec.body.0, grpc_status: spec.grpc_status })
    }
}
from_object!(Response, ResponseSpec);
