//! The body read timeout: a request's body must have arrived within `body_timeout` of its
//! head (default 10 s), or the answer is 408 `request_timeout` and the connection is closed.
//! actix's `client_request_timeout` covers the head only: a client holding a valid key could
//! otherwise trickle a body a byte a minute and hold a connection and a handler forever.
//!
//! The middleware wraps the payload of every request that has a body in a stream that fails
//! once the deadline passes and raises a flag; whatever the handler (the JSON body reader or
//! the proxy) answers to that failure, the middleware answers 408 instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::{StatusCode, header};
use bytes::Bytes;
use futures_util::Stream;

use super::Problem;

/// The default body read timeout.
pub const BODY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// `[http]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds a request body may take to arrive after the request head (default 10, 1 to
    /// 3600); past it, 408 `request_timeout`.
    pub body_timeout_seconds: Option<u64>,
}

impl HttpConfig {
    /// The body read timeout; `Err` names the key when it is out of range.
    pub fn body_timeout(&self) -> Result<Duration, &'static str> {
        match self.body_timeout_seconds {
            None => Ok(BODY_TIMEOUT_DEFAULT),
            Some(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
            Some(_) => Err("http.body_timeout_seconds must be 1 to 3600"),
        }
    }
}

/// Puts the deadline on `req`'s body, if it has one; the flag is raised when it passed.
pub(super) fn arm(req: &mut ServiceRequest, timeout: Duration) -> Option<Arc<AtomicBool>> {
    // HTTP/1.x: a body only with Content-Length or Transfer-Encoding. HTTP/2 frames need
    // neither: any request there may carry one.
    let h = req.headers();
    let declared_empty = h
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.to_str().is_ok_and(|v| v.trim() == "0"));
    let has_body = !declared_empty
        && (h.contains_key(header::TRANSFER_ENCODING)
            || h.contains_key(header::CONTENT_LENGTH)
            || req.version() == actix_web::http::Version::HTTP_2);
    if !has_body {
        return None;
    }
    let fired = Arc::new(AtomicBool::new(false));
    let stream = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(actix_web::rt::time::sleep(timeout)),
        fired: fired.clone(),
        done: false,
    };
    let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    req.set_payload(Payload::from(boxed));
    Some(fired)
}

/// The 408 answer.
pub(super) fn timed_out(timeout: Duration) -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {} s",
            timeout.as_secs()
        ),
    )
}

struct Deadline {
    inner: Payload,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    fired: Arc<AtomicBool>,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.done = item.is_none();
            return Poll::Ready(item);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Relaxed);
            this.done = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body read timeout",
            )))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_timeout_is_configurable_within_bounds() {
        assert_eq!(
            HttpConfig::default().body_timeout(),
            Ok(BODY_TIMEOUT_DEFAULT)
        );
        let c = |s| HttpConfig {
            body_timeout_seconds: Some(s),
        };
        assert_eq!(c(3).body_timeout(), Ok(Duration::from_secs(3)));
        assert!(c(0).body_timeout().is_err());
        assert!(c(3601).body_timeout().is_err());
        let p = timed_out(Duration::from_secs(3)).response();
        assert_eq!(p.status(), StatusCode::REQUEST_TIMEOUT);
    }
}
