//! Streamed bodies between a blocking thread and a connection: a response body fed chunk by
//! chunk (namespace export), and a request body read as a `std::io::Read` (namespace import).
//! Each side waits on a bounded channel, so neither holds more than a few chunks in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// Chunks in flight between a producer and the connection.
pub(crate) const CHANNEL_CHUNKS: usize = 8;

/// Bytes a [`ChunkWriter`] gathers before handing a chunk to the connection.
const CHUNK_BYTES: usize = 256 * 1024;

/// A response body whose chunks come from a channel; it ends when the sender is dropped.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// The writing end of a [`ChannelBody`], for a blocking thread: `Write` that sends chunks of
/// [`CHUNK_BYTES`], waiting while the connection is behind. A client that went away makes
/// every write fail (`BrokenPipe`), which stops the producer.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

/// A connected writer and body.
pub(crate) fn channel_body() -> (ChunkWriter, ChannelBody) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        },
        ChannelBody { rx },
    )
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A request body as `Read` on a blocking thread: chunks arrive from the task reading the
/// connection; an `Err` chunk (a read error or timeout there) fails the read with its text.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Result<Bytes, String>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
