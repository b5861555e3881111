//! The bytes `pool` and the built-in server exchange: a one-line raw
//! request and reply, or HTTP/1.1 keep-alive `GET`. Parsing is pure (byte
//! slices in, lengths out) so it is tested without sockets.

/// The raw request `pool` sends to the built-in server.
pub const RAW_REQUEST: &[u8] = b"tcptrace ping\n";
/// The built-in server's reply to a raw request line.
pub const RAW_REPLY: &[u8] = b"ok\n";
/// The built-in server's reply to an HTTP request.
pub const HTTP_REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
/// Longest request head or reply either side buffers before giving up.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A keep-alive `GET`.
pub fn http_request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcptrace-stress\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

/// A complete reply at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Bytes the reply takes, head and body.
    pub len: usize,
    pub status: u16,
    /// The server will close the connection after this reply.
    pub close: bool,
}

/// Why a reply cannot be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadReply;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw reply is one line.
pub fn raw_reply(buf: &[u8]) -> Result<Option<Reply>, BadReply> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => Ok(Some(Reply {
            len: end + 1,
            status: 200,
            close: false,
        })),
        None if buf.len() > MAX_MESSAGE => Err(BadReply),
        None => Ok(None),
    }
}

/// An HTTP/1.x response: `Ok(None)` until it is complete. Needs a
/// Content-Length or chunked body, as keep-alive responses have.
pub fn http_reply(buf: &[u8]) -> Result<Option<Reply>, BadReply> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Err(BadReply)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| BadReply)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(BadReply)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or(BadReply)?;
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(BadReply)?;
    if !version.starts_with("HTTP/1.") {
        return Err(BadReply);
    }
    let mut close = version == "HTTP/1.0";
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(BadReply)?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<usize>().map_err(|_| BadReply)?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" if value.eq_ignore_ascii_case("close") => close = true,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => close = false,
            _ => {}
        }
    }
    let body = head_end + 4;
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let len = if no_body {
        Some(body)
    } else if chunked {
        chunked_end(buf, body)?
    } else {
        let length = length.ok_or(BadReply)?;
        if length > MAX_MESSAGE {
            return Err(BadReply);
        }
        (buf.len() >= body + length).then_some(body + length)
    };
    Ok(len.map(|len| Reply { len, status, close }))
}

/// End of a chunked body starting at `pos`, once all of it is buffered.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<usize>, BadReply> {
    loop {
        let Some(line_len) = find(&buf[pos..], b"\r\n") else {
            return if buf.len() > MAX_MESSAGE {
                Err(BadReply)
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&buf[pos..pos + line_len]).map_err(|_| BadReply)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| BadReply)?;
        pos += line_len + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(end) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if size > MAX_MESSAGE {
            return Err(BadReply);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(BadReply);
        }
        pos += size + 2;
    }
}

/// A complete request at the start of the server's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// An HTTP request head of this many bytes (bodies are not expected).
    Http(usize),
    /// A raw request line of this many bytes.
    Raw(usize),
}

impl Request {
    pub fn len(self) -> usize {
        match self {
            Request::Http(len) | Request::Raw(len) => len,
        }
    }

    pub fn reply(self) -> &'static [u8] {
        match self {
            Request::Http(_) => HTTP_REPLY,
            Request::Raw(_) => RAW_REPLY,
        }
    }
}

/// The next request in the server's buffer: HTTP if it starts like a
/// request line (`METHOD /path HTTP/1.x`), otherwise one raw line.
pub fn next_request(buf: &[u8]) -> Result<Option<Request>, BadReply> {
    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_MESSAGE {
            Err(BadReply)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..line_end];
    if !line.ends_with(b" HTTP/1.1\r") && !line.ends_with(b" HTTP/1.0\r") {
        return Ok(Some(Request::Raw(line_end + 1)));
    }
    match find(buf, b"\r\n\r\n") {
        Some(head_end) => Ok(Some(Request::Http(head_end + 4))),
        None if buf.len() > MAX_MESSAGE => Err(BadReply),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_wire_raw() {
        assert_eq!(raw_reply(b"o").unwrap(), None);
        assert_eq!(raw_reply(b"ok\nmore").unwrap().unwrap().len, 3);
        assert_eq!(
            next_request(RAW_REQUEST).unwrap(),
            Some(Request::Raw(RAW_REQUEST.len()))
        );
        assert_eq!(next_request(b"tcptrace pi").unwrap(), None);
    }

    #[test]
    fn stress_wire_http_request_round_trip() {
        let request = http_request("/health", "lb:8080");
        let half = &request[..request.len() - 2];
        assert_eq!(next_request(half).unwrap(), None);
        assert_eq!(
            next_request(&request).unwrap(),
            Some(Request::Http(request.len()))
        );
        let reply = http_reply(HTTP_REPLY).unwrap().unwrap();
        assert_eq!(
            reply,
            Reply {
                len: HTTP_REPLY.len(),
                status: 200,
                close: false
            }
        );
        assert_eq!(
            http_reply(&HTTP_REPLY[..HTTP_REPLY.len() - 1]).unwrap(),
            None
        );
    }

    #[test]
    fn stress_wire_http_replies() {
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\ncontent-length: 2\r\n\r\nno";
        assert_eq!(
            http_reply(close).unwrap(),
            Some(Reply {
                len: close.len(),
                status: 503,
                close: true
            })
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        assert_eq!(http_reply(chunked).unwrap().unwrap().len, chunked.len());
        assert_eq!(http_reply(&chunked[..chunked.len() - 1]).unwrap(), None);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            http_reply(no_content).unwrap().unwrap().len,
            no_content.len()
        );
        assert!(
            http_reply(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
        assert_eq!(http_reply(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(BadReply));
        assert_eq!(
            http_reply(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(BadReply),
            "no length on keep-alive"
        );
        assert_eq!(
            http_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(BadReply)
        );
    }
}
