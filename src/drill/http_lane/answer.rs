//! An HTTP/1.1 answer, read off a lane connection: the head parsed in place with
//! `httparse`, then the body by its length, its chunks, or the connection's close, each
//! within the answer size limit.

use super::{Conn, ErrorClass, MAX_ANSWER};
use tokio::io::AsyncReadExt;

/// How the body's end is known.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// An answer's head, as far as the lane needs it.
pub(super) struct Head {
    pub(super) status: u16,
    len: usize,
    framing: Framing,
    pub(super) retry_after: bool,
    /// Whether the connection can carry another request (once the answer is read, also
    /// whether it ended where its framing said).
    pub(super) keep_alive: bool,
}

/// Parses the head at the start of `buf`: None while it is incomplete. Not async, so the
/// header array (3 KB) lives on the stack for the call, not in every loop's future.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ErrorClass> {
    // As many headers as hyper allows.
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrorClass::Reset),
    };
    let status = resp.code.unwrap_or(0);
    let (mut length, mut chunked, mut encoded) = (None, false, false);
    let (mut retry_after, mut close, mut keep) = (false, false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only, and every copy the same (RFC 9112 6.3), as hyper.
            let v = h.value.trim_ascii();
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(ErrorClass::Reset)?;
            if length.is_some_and(|l| l != n) {
                return Err(ErrorClass::Reset);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            chunked = last_token_is(h.value, "chunked");
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= contains_token(h.value, "close");
            keep |= contains_token(h.value, "keep-alive");
        }
    }
    // A transfer coding wins over a length; one that does not end in chunked ends with
    // the connection (RFC 9112 6.3).
    let framing = match (status, encoded, chunked, length) {
        (204 | 304, ..) => Framing::Length(0),
        (_, true, true, _) => Framing::Chunked,
        (_, true, false, _) => Framing::UntilClose,
        (_, false, _, Some(n)) => Framing::Length(n),
        _ => Framing::UntilClose,
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        retry_after,
        keep_alive: !close && (keep || resp.version == Some(1)),
    }))
}

/// Reads one answer: the head, then the body by its length, its chunks, or the close.
pub(super) async fn read_answer(c: &mut Conn) -> Result<Head, ErrorClass> {
    c.buf.clear();
    c.body.clear();
    // The head (a 1xx before the answer is skipped).
    let mut head = loop {
        match parse_head(&c.buf)? {
            Some(h) if (100..200).contains(&h.status) => {
                c.buf.drain(..h.len);
            }
            Some(h) => break h,
            None => fill(c).await.map_err(|_| ErrorClass::Reset)?,
        }
    };
    let mut pos = head.len;
    match head.framing {
        Framing::Length(len) => {
            if len > MAX_ANSWER {
                return Err(ErrorClass::Reset);
            }
            while c.buf.len() < pos + len {
                fill(c).await.map_err(|_| ErrorClass::Reset)?;
            }
            c.body.extend_from_slice(&c.buf[pos..pos + len]);
            pos += len;
        }
        Framing::Chunked => loop {
            match httparse::parse_chunk_size(&c.buf[pos..]) {
                Ok(httparse::Status::Complete((n, size))) => {
                    // Compared without adding: a size can be up to 2^64 - 1.
                    let size = usize::try_from(size).map_err(|_| ErrorClass::Reset)?;
                    if size > MAX_ANSWER - c.body.len() {
                        return Err(ErrorClass::Reset);
                    }
                    // The chunk, and the CRLF after it (after the last, the trailers' end).
                    let end = pos + n + size;
                    if size == 0 {
                        pos = end;
                        loop {
                            if let Some(i) = find_crlf(&c.buf[pos..]) {
                                let line_empty = i == 0;
                                pos += i + 2;
                                if line_empty {
                                    break;
                                }
                            } else {
                                fill(c).await.map_err(|_| ErrorClass::Reset)?;
                            }
                        }
                        break;
                    }
                    while c.buf.len() < end + 2 {
                        fill(c).await.map_err(|_| ErrorClass::Reset)?;
                    }
                    if &c.buf[end..end + 2] != b"\r\n" {
                        return Err(ErrorClass::Reset);
                    }
                    c.body.extend_from_slice(&c.buf[pos + n..end]);
                    pos = end + 2;
                }
                Ok(httparse::Status::Partial) => fill(c).await.map_err(|_| ErrorClass::Reset)?,
                Err(_) => return Err(ErrorClass::Reset),
            }
        },
        Framing::UntilClose => {
            head.keep_alive = false;
            loop {
                match fill(c).await {
                    Ok(()) => {}
                    Err(Fill::Closed) => break,
                    Err(_) => return Err(ErrorClass::Reset),
                }
            }
            c.body.extend_from_slice(&c.buf[pos..]);
            pos = c.buf.len();
        }
    }
    // Bytes past the answer were never asked for: the connection is out of step.
    if c.buf.len() > pos {
        head.keep_alive = false;
    }
    Ok(head)
}

/// Why no more of the answer came: the close ends a close-delimited body; anything else
/// (an error, the size limit) is a reset.
enum Fill {
    Closed,
    Failed,
}

/// Reads more of the answer into the buffer.
async fn fill(c: &mut Conn) -> Result<(), Fill> {
    if c.buf.len() >= MAX_ANSWER {
        return Err(Fill::Failed);
    }
    c.buf.reserve(4096);
    match c.tcp.read_buf(&mut c.buf).await {
        Ok(0) => Err(Fill::Closed),
        Ok(_) => Ok(()),
        Err(_) => Err(Fill::Failed),
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// The last of a comma-separated list is `token`.
fn last_token_is(value: &[u8], token: &str) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn contains_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
