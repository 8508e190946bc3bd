//! Wire frames on a byte stream: a reader that decodes incrementally (a piece's bytes
//! are a slice of the read buffer, never copied) and a writer that sends a piece's
//! header and bytes without joining them. Generic over futures' `AsyncRead` and
//! `AsyncWrite`, so the same code runs on libp2p streams and on memory pipes in tests.

use bytes::{Bytes, BytesMut};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use shoal_protocol::Digest;
use shoal_protocol::wire::{self, Message, WireError};

/// Why a stream to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The transport failed (connection lost, reset).
    #[error("connection to the peer failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that breaks the protocol.
    #[error("the peer sent a bad frame: {0}")]
    Wire(#[from] WireError),
    /// The peer closed the stream in the middle of a frame.
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
    /// This node built a message the protocol refuses (a bug).
    #[error("internal error: refused to send an invalid message: {0}")]
    Invalid(#[from] wire::InvalidMessage),
}

/// Most bytes asked of the transport per read.
const READ_SIZE: usize = 128 * 1024;

/// Reads frames from `R`.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// What one read lands in before it joins `buf`. A read returns what the transport
    /// has (often a few KiB), so reading into `buf`'s spare room would mean zeroing
    /// the whole rest of a 1 MiB frame on every read; one copy of the bytes that did
    /// arrive is far cheaper.
    scratch: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_SIZE),
            scratch: vec![0; READ_SIZE].into_boxed_slice(),
        }
    }

    /// The next message, or `None` when the peer closed the stream between frames.
    pub async fn recv(&mut self) -> Result<Option<Message>, StreamError> {
        loop {
            // `decode_bytes` reserves what a partial frame still needs, so `buf`
            // grows once per frame, not per read.
            if let Some(message) = wire::decode_bytes(&mut self.buf)? {
                return Ok(Some(message));
            }
            let n = self.inner.read(&mut self.scratch).await?;
            self.buf.extend_from_slice(&self.scratch[..n]);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(StreamError::Truncated)
                };
            }
        }
    }
}

/// Writes frames to `W`.
pub struct FrameWriter<W> {
    inner: W,
    scratch: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            scratch: Vec::with_capacity(256),
        }
    }

    /// Sends one message (a piece's bytes are written as they are, not re-encoded).
    pub async fn send(&mut self, message: &Message) -> Result<(), StreamError> {
        if let Message::Piece {
            digest,
            index,
            bytes,
        } = message
        {
            return self.send_piece(digest, *index, bytes).await;
        }
        self.scratch.clear();
        wire::encode(message, &mut self.scratch)?;
        self.inner.write_all(&self.scratch).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Sends a piece: its 42-byte header, then its bytes from where they lie.
    pub async fn send_piece(
        &mut self,
        digest: &Digest,
        index: u32,
        bytes: &Bytes,
    ) -> Result<(), StreamError> {
        self.scratch.clear();
        wire::encode_piece_header(digest, index, bytes.len(), &mut self.scratch)?;
        self.inner.write_all(&self.scratch).await?;
        self.inner.write_all(bytes).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Says goodbye and closes the sending side.
    pub async fn close(&mut self) -> Result<(), StreamError> {
        self.inner.close().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::PieceId;

    #[tokio::test]
    async fn frames_cross_a_pipe_whole_including_full_pieces() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let mut writer = FrameWriter::new(a.compat());
        let mut reader = FrameReader::new(b.compat());
        let digest = Digest::of(b"blob");
        let piece = Bytes::from(vec![7u8; 1 << 20]);
        let send = async {
            writer
                .send(&Message::BlobMapRequest { digest, start: 0 })
                .await
                .unwrap();
            writer.send_piece(&digest, 3, &piece).await.unwrap();
            writer.send(&Message::Bye).await.unwrap();
            writer.close().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            while let Some(m) = reader.recv().await.unwrap() {
                got.push(m);
            }
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Message::BlobMapRequest { digest, start: 0 });
        match &got[1] {
            Message::Piece { index, bytes, .. } => {
                assert_eq!(*index, 3);
                assert_eq!(PieceId::of(bytes), PieceId::of(&piece));
            }
            other => panic!("expected a piece, got {other:?}"),
        }
        assert_eq!(got[2], Message::Bye);
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error_not_an_end() {
        let (a, b) = tokio::io::duplex(1024);
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let mut raw = a.compat();
        let mut frame = Vec::new();
        wire::encode(&Message::Bye, &mut frame).unwrap();
        raw.write_all(&frame[..frame.len() - 1]).await.unwrap();
        raw.close().await.unwrap();
        drop(raw);
        let mut reader = FrameReader::new(b.compat());
        assert!(matches!(reader.recv().await, Err(StreamError::Truncated)));
    }
}
