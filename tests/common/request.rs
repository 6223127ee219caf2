//! One HTTP/1.1 request as the raw fake servers of the drill's tests read it: method,
//! `Mcp-Session-Id` and body (`#[path]`-included).

use std::io::BufRead;

/// One HTTP request as the fakes need it.
pub struct Req {
    pub method: String,
    pub session: Option<String>,
    pub body: String,
}

/// The next request on a connection; None when it closes.
pub fn read_request(r: &mut impl BufRead) -> Option<Req> {
    let (mut len, mut session, mut method) = (0usize, None, String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if method.is_empty() {
            method = line.split(' ').next().unwrap_or("").to_string();
        }
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = l.strip_prefix("mcp-session-id:") {
            session = Some(v.trim().to_string());
        }
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).ok()?;
    Some(Req {
        method,
        session,
        body: String::from_utf8_lossy(&buf).to_string(),
    })
}
