//! Streaming between HTTP bodies and the library's blocking readers and writers, so a
//! file moves through the server a few chunks at a time: an upload's body feeds a
//! [`BodyReader`] that the agent client reads on the blocking pool; a download's
//! [`ChunkWriter`] feeds the response body. Memory per transfer is bounded by the
//! channel depth (16 chunks), whatever the file's size.

use std::io::{self, Read, Write};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::conn::timed_body::is_body_timeout;
use crate::errors::ApiError;

/// Chunks in flight per transfer.
const DEPTH: usize = 16;

/// The request body as a blocking [`Read`]: chunks arrive from [`consume_body`].
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Runs `consume` on the blocking pool with `body` as its reader, and returns its result.
/// A body that breaks off (the client left) is a read error for `consume`; one that
/// stalls past the body timeout is answered 408 `request_timeout`.
pub async fn consume_body<T, F>(body: Body, consume: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut BodyReader) -> Result<T, ApiError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    let job = tokio::task::spawn_blocking(move || {
        let mut r = BodyReader {
            rx,
            cur: Bytes::new(),
        };
        consume(&mut r)
    });
    let mut chunks = body.into_data_stream();
    let mut stalled = None;
    while let Some(chunk) = chunks.next().await {
        let item = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                stalled = Some(ApiError::request_timeout(e.to_string()));
            }
            io::Error::other(format!("reading the request body: {e}"))
        });
        let broken = item.is_err();
        // A closed receiver: `consume` is done (it failed early); its error says why.
        if tx.send(item).await.is_err() || broken {
            break;
        }
    }
    drop(tx);
    let done = job
        .await
        .map_err(|e| ApiError::internal(format!("the worker thread failed: {e}")))?;
    // A body that stalled is the client's doing, whatever the consumer made of it.
    match stalled {
        Some(e) => Err(e),
        None => done,
    }
}

enum Msg {
    Data(Bytes),
    Done(Result<u64, ApiError>),
}

/// A blocking [`Write`] whose bytes become the response body.
pub struct ChunkWriter {
    tx: mpsc::Sender<Msg>,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Msg::Data(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` on the blocking pool and streams what it writes as a response body.
/// An error before the first byte is returned as such (a proper error status); an error
/// after it aborts the body, so the client sees an incomplete response, never a short
/// file that looks whole.
pub async fn produce_body<F>(produce: F) -> Result<Body, ApiError>
where
    F: FnOnce(&mut ChunkWriter) -> Result<u64, ApiError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter { tx: tx.clone() };
        let done = produce(&mut w);
        let _ = tx.blocking_send(Msg::Done(done));
    });
    let first = match rx.recv().await {
        Some(Msg::Data(b)) => b,
        Some(Msg::Done(Ok(_))) => return Ok(Body::empty()),
        Some(Msg::Done(Err(e))) => return Err(e),
        None => return Err(ApiError::internal("the worker thread failed")),
    };
    let rest = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Data(b)) => Some((Ok(b), Some(rx))),
            Some(Msg::Done(Ok(_))) => None,
            Some(Msg::Done(Err(e))) => Some((Err(io::Error::other(e.message)), None)),
            None => Some((Err(io::Error::other("the worker thread failed")), None)),
        }
    });
    let head = futures_util::stream::once(async move { Ok::<_, io::Error>(first) });
    Ok(Body::from_stream(head.chain(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_stream_through_in_order() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(7777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let got = consume_body(body, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(v)
        })
        .await
        .unwrap();
        assert!(got == data);

        let copy = data.clone();
        let body = produce_body(move |w| {
            for c in copy.chunks(5000) {
                w.write_all(c)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Ok(copy.len() as u64)
        })
        .await
        .unwrap();
        let back = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert!(back[..] == data[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_before_the_first_byte_are_errors_and_after_it_abort_the_body() {
        let e = produce_body(|_| Err(ApiError::invalid_input("no such file")))
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_input");

        let body = produce_body(|w| {
            w.write_all(b"partial").unwrap();
            Err(ApiError::internal("EIO in the middle"))
        })
        .await
        .unwrap();
        let e = axum::body::to_bytes(body, usize::MAX).await.unwrap_err();
        assert!(e.to_string().contains("EIO"), "{e}");

        // A consumer that fails early gets its own error back, however long the body.
        let endless =
            futures_util::stream::repeat_with(|| Ok::<_, io::Error>(Bytes::from_static(b"x")));
        let e = consume_body(Body::from_stream(endless), |_| -> Result<(), ApiError> {
            Err(ApiError::invalid_input("a directory is in the way"))
        })
        .await
        .unwrap_err();
        assert_eq!(e.message, "a directory is in the way");
    }
}
