//! The `response_rewrite` fault: the upstream's response is changed on its way back (a new
//! status, headers set, headers removed).

use crate::faults::Kind;
use crate::model::values::{self, from_object, HeaderName, HttpStatus};
use crate::stats::Stat;
use serde::{Deserialize, Serialize};

/// A response rewrite: `{"status": 500, "add_headers": {"x-b": "c"}, "remove_headers": ["etag"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResponseRewrite {
    /// A new status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<HttpStatus>,
    /// Headers set (replacing any of the same name).
    #[serde(with = "values::pairs")]
    pub add_headers: Vec<(String, String)>,
    /// Headers removed.
    pub remove_headers: Vec<HeaderName>,
}

impl Kind for ResponseRewrite {
    const NAME: &'static str = "response_rewrite";
    const LABEL: &'static str = "responseRewrite";
    const STAT: Stat = Stat::ResponsesRewritten;
}

/// The rewrite as written; every member optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRewriteSpec {
    status: Option<HttpStatus>,
    #[serde(default, with = "values::pairs")]
    add_headers: Vec<(String, String)>,
    #[serde(default)]
    remove_headers: Vec<HeaderName>,
}

impl TryFrom<ResponseRewriteSpec> for ResponseRewrite {
    type Error = &'static str;
    fn try_from(spec: ResponseRewriteSpec) -> Result<ResponseRewrite, &'static str> {
        Ok(ResponseRewrite { status: spec.status, add_headers: spec.add_headers, remove_headers: spec.remove_headers })
    }
}
from_object!(ResponseRewrite, ResponseRewriteSpec);
