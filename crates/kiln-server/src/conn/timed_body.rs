//! Request and response bodies as the connection layer hands them on: a request body
//! that sends nothing for the body timeout fails with [`BodyTimeout`] (the extractors
//! answer 408 `request_timeout`); a response body keeps its request counted as in
//! flight until it is done, so a long streamed answer is never taken for idleness.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::registry::ConnState;

/// The request body sent nothing for the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}: it is shorter than its Content-Length, or the client stalled")]
pub struct BodyTimeout(pub Duration);

/// Whether `e`, or an error it wraps, is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// A request body with a stall timeout. The clock runs only while the body is waited
/// for: time the server spends elsewhere (an agent that is slow to take a chunk) does
/// not count against the client.
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            sleep: None,
            timed_out: false,
        }
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                self.sleep = None;
                Poll::Ready(f.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Ends its request (for the idle timeout) when dropped.
pub struct InFlight(pub Arc<ConnState>);

impl InFlight {
    pub fn start(state: Arc<ConnState>) -> InFlight {
        state.request_started();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that holds its request's [`InFlight`] until hyper is done with it.
pub struct Tracked {
    pub inner: Body,
    pub _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_and_a_flowing_one_does_not() {
        let (tx, rx) = futures_channel_like();
        let body = Body::new(TimedBody::new(
            Body::from_stream(rx),
            Duration::from_secs(30),
        ));
        let mut s = body.into_data_stream();
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), "a");
        // Nothing more is sent: after 30 s (paused clock) the body fails.
        let e = s.next().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&e), "{e}");
        assert!(s.next().await.is_none());
        drop(tx);
    }

    fn futures_channel_like() -> (
        tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
        impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let s =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            );
        (tx, s)
    }
}
