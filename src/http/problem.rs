//! The error answer of the HTTPS edge: an RFC 9457 problem+json body with a stable `code`, and
//! the one mapping from the library's [`Error`] to a status. Server-side failures answer a
//! generic 500 `internal_error` and leave their details to the server log.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use serde_json::{Value, json};

use crate::Error;

/// An error answer: a problem+json body with a stable `code`.
#[derive(Debug)]
pub struct Problem {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) detail: String,
    /// `Retry-After`, seconds (a 429).
    pub(super) retry_after: Option<u64>,
    /// RFC 9457 extension members after the standard ones (`required_scope` on a 403).
    pub(super) extensions: Vec<(&'static str, Value)>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            extensions: Vec::new(),
        }
    }

    /// The same answer with the extension member `name: value` in its body.
    pub(super) fn extension(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.extensions.push((name, value.into()));
        self
    }

    /// The same answer with `hint` after its detail (a sentence telling the caller what to do).
    pub(super) fn hint(mut self, hint: &str) -> Self {
        self.detail = format!("{}; {hint}", self.detail);
        self
    }

    /// The same answer with `Retry-After: seconds`.
    pub(super) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The stable `code` of the answer.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The problem+json body (also one item's answer in a batch).
    pub(super) fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:panvault:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let Value::Object(m) = &mut body {
            for (name, value) in &self.extensions {
                m.insert((*name).to_string(), value.clone());
            }
        }
        body
    }

    /// The whole answer: status, content type, `WWW-Authenticate` on 401, `Retry-After` when
    /// set, `Connection: close` on 408 (the rest of the body is not waited for), body.
    pub(super) fn response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.content_type("application/problem+json");
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(s) = self.retry_after {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            r.force_close();
        }
        r.body(self.body().to_string())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.code)
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

/// What a handler answers: its response, or a problem.
pub(super) type Answer = Result<HttpResponse, Problem>;

/// The one mapping from library errors to HTTP answers. Every variant is named: a new one is a
/// compile error here until it is given its status.
impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidPan { .. }
            | Error::LuhnCheckFailed
            | Error::InvalidExpiry { .. }
            | Error::CardExpired { .. }
            | Error::InvalidCvv
            | Error::InvalidCustomToken { .. }
            | Error::InvalidPrefix
            | Error::InvalidField { .. }
            | Error::BatchTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TokenConflict
            | Error::CardChangeNotAllowed { .. }
            | Error::PrefixTaken
            | Error::ShopTaken => StatusCode::CONFLICT,
            Error::TokenNotFound
            | Error::MerchantNotFound
            | Error::ShopNotFound
            | Error::ApiKeyNotFound => StatusCode::NOT_FOUND,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            // An unseal attempt with a wrong passphrase or share.
            Error::KeyUnlock(_) | Error::ShareRefused(_) | Error::NotEnoughShares { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::Forbidden { .. } | Error::MissingScope { .. } => StatusCode::FORBIDDEN,
            Error::Sealed | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            // Failures of the server, never of the request: the answer names none of them.
            Error::Decrypt { .. }
            | Error::AlreadyInitialized(_)
            | Error::NotInitialized(_)
            | Error::Store { .. }
            | Error::Corrupt { .. }
            | Error::JournalCorrupt { .. }
            | Error::Encode { .. }
            | Error::Encrypt { .. }
            | Error::Exhausted { .. }
            | Error::AuditBroken { .. }
            | Error::AuthRecordBroken { .. }
            | Error::Io { .. }
            | Error::Hsm(_)
            | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // Library errors carry no card data; the details stay in the server log.
            tracing::error!(code = e.code(), error = %e, "request failed");
            return Problem::new(
                status,
                "internal_error",
                "internal error; see the server log",
            );
        }
        let problem = Problem::new(status, e.code(), e.to_string());
        // A 403 for a scope names it in a member as well as in the detail, for programs.
        if let Error::MissingScope { scope } = e {
            return problem.extension("required_scope", scope);
        }
        problem
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn server_failures_answer_a_generic_500() {
        for e in [
            Error::Encode { what: "report" },
            Error::Encrypt { what: "record" },
            Error::Exhausted { what: "token" },
            Error::store("put", "disk full"),
            Error::Config("bad".into()),
        ] {
            let p = Problem::from(e);
            assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(p.code(), "internal_error");
            assert_eq!(p.body()["detail"], "internal error; see the server log");
        }
    }

    #[test]
    fn request_failures_answer_their_own_code() {
        for (e, status) in [
            (Error::LuhnCheckFailed, StatusCode::UNPROCESSABLE_ENTITY),
            (Error::ShopTaken, StatusCode::CONFLICT),
            (Error::ApiKeyNotFound, StatusCode::NOT_FOUND),
            (Error::Unauthorized, StatusCode::UNAUTHORIZED),
            (Error::KeyUnlock("wrong"), StatusCode::BAD_REQUEST),
            (Error::Forbidden { reason: "scope" }, StatusCode::FORBIDDEN),
            (
                Error::MissingScope { scope: "reveal" },
                StatusCode::FORBIDDEN,
            ),
            (
                Error::CardExpired {
                    month: 1,
                    year: 2020,
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                Error::CardChangeNotAllowed { kind: "standard" },
                StatusCode::CONFLICT,
            ),
            (Error::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let code = e.code();
            let detail = e.to_string();
            let p = Problem::from(e);
            assert_eq!((p.status, p.code()), (status, code));
            assert_eq!(p.body()["detail"], detail.as_str());
        }
        let p = Problem::from(Error::MissingScope { scope: "reveal" });
        assert_eq!(p.body()["required_scope"], "reveal");
        assert_eq!(
            p.body()["detail"],
            "forbidden: this call needs an API key with the `reveal` scope"
        );
        let r = Problem::from(Error::Unauthorized).response();
        assert_eq!(r.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    }
}
