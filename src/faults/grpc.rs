//! gRPC callers: how to tell one, and which gRPC status code an HTTP status stands for
//! (the gRPC spec's HTTP-to-gRPC table, which Envoy also uses for its local replies).

/// True for `content-type: application/grpc`, `application/grpc+proto` and the like.
pub fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        let t = t.trim_start();
        t.len() >= 16 && t[..16].eq_ignore_ascii_case("application/grpc") && matches!(t.as_bytes().get(16), None | Some(b'+' | b';'))
    })
}

/// The gRPC status code for an HTTP status.
pub fn status_for_http(status: u16) -> u8 {
    match status {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502..=504 => 14,       // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for yes in ["application/grpc", "application/grpc+proto", "Application/GRPC;charset=x"] {
            assert!(is_grpc(Some(yes)), "{yes}");
        }
        for no in ["application/grpc-web", "application/json", "application/grp", ""] {
            assert!(!is_grpc(Some(no)), "{no}");
        }
        assert!(!is_grpc(None));
    }

    #[test]
    fn spec_mapping() {
        assert_eq!(status_for_http(503), 14);
        assert_eq!(status_for_http(404), 12);
        assert_eq!(status_for_http(500), 2);
        assert_eq!(status_for_http(401), 16);
    }
}
