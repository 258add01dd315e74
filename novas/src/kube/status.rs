//! Kubernetes `Status` objects: kubectl prints their `message` as it would
//! print kube-apiserver's own, so every refusal NOVAS makes is one.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;

/// The `Status` JSON for `code` with `reason` (Forbidden, Unauthorized, …).
pub fn json(code: StatusCode, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

/// A response carrying a `Status`.
pub fn response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json(code, reason, message).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"novas\""),
        );
    }
    r
}

pub fn forbidden(message: &str) -> Response<Body> {
    response(StatusCode::FORBIDDEN, "Forbidden", message)
}

pub fn unauthorized(message: &str) -> Response<Body> {
    response(StatusCode::UNAUTHORIZED, "Unauthorized", message)
}

pub fn not_found(message: &str) -> Response<Body> {
    response(StatusCode::NOT_FOUND, "NotFound", message)
}

pub fn unavailable(message: &str) -> Response<Body> {
    response(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_is_the_shape_kubectl_reads() {
        let v = json(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "pods is forbidden: denied by policy \"p\"",
        );
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert!(v["message"].as_str().unwrap_or("").contains("policy"));
        let r = unauthorized("no");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
