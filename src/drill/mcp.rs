//! The MCP messages the drill sends (JSON-RPC over streamable HTTP) and how it reads the
//! answers. A server may answer a POST with `application/json` or with an SSE stream
//! (`event: message` / `data: {...}`); both are accepted.

use serde::Serialize;

pub const PROTOCOL_VERSION: &str = "2025-03-26";

/// Error classes, as the drill reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Timeout,
    Refused,
    Reset,
    Http5xx,
    /// Refused at once by admission control: a 429, or a 503 that says to retry (a
    /// `Retry-After`, or the refusal code -32029 in its body). Not a failure of the
    /// hypothesis unless the expectations say so: it is load shedding doing its job. A
    /// bare 503 (a full queue, a proxy with no server) is an `Http5xx`.
    Shed,
    JsonRpc,
    SessionLost,
    /// The generator could not send on time (too many requests in flight).
    Generator,
    /// A 2xx whose body is empty, unparsable, or holds neither `result` nor `error`: not
    /// an answer, whatever the status says.
    NoAnswer,
    /// A `tools/call` answered with `isError: true`: the tool failed, the protocol did not.
    ToolError,
    /// The server closed the connection (WebSocket, TCP) with requests waiting on it; the
    /// close codes are counted apart (`closed_by_server` in the result).
    ClosedByServer,
    /// A message on a stream wire that is not JSON-RPC (or past the size limit, or a
    /// binary WebSocket frame).
    Frame,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 12] = [
        ErrorClass::Timeout,
        ErrorClass::Refused,
        ErrorClass::Reset,
        ErrorClass::Http5xx,
        ErrorClass::Shed,
        ErrorClass::JsonRpc,
        ErrorClass::SessionLost,
        ErrorClass::Generator,
        ErrorClass::NoAnswer,
        ErrorClass::ToolError,
        ErrorClass::ClosedByServer,
        ErrorClass::Frame,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Refused => "refused",
            ErrorClass::Reset => "reset",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::Shed => "shed",
            ErrorClass::JsonRpc => "jsonrpc",
            ErrorClass::SessionLost => "session_lost",
            ErrorClass::Generator => "generator",
            ErrorClass::NoAnswer => "no_answer",
            ErrorClass::ToolError => "tool_error",
            ErrorClass::ClosedByServer => "closed_by_server",
            ErrorClass::Frame => "frame",
        }
    }
}

/// The JSON-RPC body of a request for `method`.
pub fn request_body(method: &str, id: u64) -> String {
    match method {
        "tools/call" => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"andon drill"}}}}}}"#
        ),
        "resources/read" => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/read","params":{{"uri":"stand-in://status"}}}}"#
        ),
        m => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{m}"}}"#),
    }
}

pub fn initialize_body() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"andon-drill","version":"{}"}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    )
}

pub const INITIALIZED_BODY: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The parts of a JSON-RPC answer the drill reads; everything else is skipped unparsed.
#[derive(serde::Deserialize)]
struct Answer {
    result: Option<AnswerResult>,
    error: Option<serde_json::Value>,
}

impl Answer {
    /// Refused at once by the server (the stand-in's code on stream wires, where there
    /// is no 503).
    fn refused(&self) -> bool {
        self.error
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(serde_json::Value::as_i64)
            == Some(crate::standin::stream::REFUSED_CODE)
    }
}

#[derive(serde::Deserialize)]
struct AnswerResult {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

/// The JSON-RPC answer in a body: the JSON itself, or the first SSE `data:` line that
/// holds one. A batch answers as its worst member.
fn answer(body: &[u8]) -> Option<Answer> {
    let one = |a: Answer| (a.result.is_some() || a.error.is_some()).then_some(a);
    let parse = |b: &[u8]| match b.trim_ascii_start().first() {
        Some(b'[') => {
            let all: Vec<Answer> = serde_json::from_slice(b).ok()?;
            let mut all: Vec<Answer> = all.into_iter().map(one).collect::<Option<_>>()?;
            let worst = all
                .iter()
                .position(|a| a.error.is_some())
                .or_else(|| {
                    all.iter()
                        .position(|a| a.result.as_ref().is_some_and(|r| r.is_error))
                })
                .unwrap_or(0);
            (!all.is_empty()).then(|| all.swap_remove(worst))
        }
        _ => serde_json::from_slice::<Answer>(b).ok().and_then(one),
    };
    parse(body).or_else(|| {
        body.split(|c| *c == b'\n')
            .filter_map(|l| l.strip_prefix(b"data:"))
            .find_map(|l| parse(l.trim_ascii()))
    })
}

/// Classifies an HTTP answer: `None` is success. `retry_after`: the answer carried a
/// `Retry-After` header. `expects_answer`: a request (it has an id) must be answered with
/// a JSON-RPC result or error; a notification may get an empty 202.
pub fn classify(
    status: u16,
    retry_after: bool,
    body: &[u8],
    expects_answer: bool,
) -> Option<ErrorClass> {
    match status {
        200..=299 if !expects_answer => None,
        200..=299 => classify_message(body),
        429 => Some(ErrorClass::Shed),
        503 if retry_after || answer(body).is_some_and(|a| a.refused()) => Some(ErrorClass::Shed),
        404 => Some(ErrorClass::SessionLost),
        // The TypeScript reference server answers an unknown session with 400 ("No valid
        // session ID provided"): as a 404, the session is replaced.
        400 if contains_ignore_case(body, b"session") => Some(ErrorClass::SessionLost),
        500..=599 => Some(ErrorClass::Http5xx),
        _ => Some(ErrorClass::JsonRpc),
    }
}

/// Classifies a JSON-RPC answer (a body, an SSE stream, or one message off a stream
/// wire): `None` is success.
pub fn classify_message(body: &[u8]) -> Option<ErrorClass> {
    match answer(body) {
        None => Some(ErrorClass::NoAnswer),
        Some(a) if a.refused() => Some(ErrorClass::Shed),
        Some(a) if a.error.is_some() => Some(ErrorClass::JsonRpc),
        Some(a) if a.result.as_ref().is_some_and(|r| r.is_error) => Some(ErrorClass::ToolError),
        Some(_) => None,
    }
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let c = |status, body: &[u8]| classify(status, true, body, true);
        assert_eq!(c(200, br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), None);
        assert_eq!(
            c(
                200,
                b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
            ),
            None
        );
        assert_eq!(
            c(200, br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601}}"#),
            Some(ErrorClass::JsonRpc)
        );
        assert_eq!(c(503, b""), Some(ErrorClass::Shed));
        // A bare 503 is the server's (or the proxy's) failure, not a refusal: the
        // stand-in's full queue, HAProxy with no server (before: both read as sheds).
        assert_eq!(
            classify(503, false, b"overload: queue full\n", true),
            Some(ErrorClass::Http5xx)
        );
        // HAProxy's shed at the edge names itself in the body even without the header.
        let edge = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32029,"message":"shed"}}"#;
        assert_eq!(classify(503, false, edge, true), Some(ErrorClass::Shed));
        assert_eq!(classify(429, false, b"", true), Some(ErrorClass::Shed));
        assert_eq!(c(404, b""), Some(ErrorClass::SessionLost));
        assert_eq!(c(502, b""), Some(ErrorClass::Http5xx));
        // Not answers: counted as such, not as successes (issue 9).
        assert_eq!(c(200, b""), Some(ErrorClass::NoAnswer));
        assert_eq!(c(200, b"<html>ok</html>"), Some(ErrorClass::NoAnswer));
        assert_eq!(
            c(200, br#"{"jsonrpc":"2.0","id":1}"#),
            Some(ErrorClass::NoAnswer)
        );
        assert_eq!(
            c(200, b"event: message\ndata: \n\n"),
            Some(ErrorClass::NoAnswer)
        );
        // A result that says its text contains "error": is still a result.
        assert_eq!(
            c(200, br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"error\": none"}]}}"#),
            None
        );
        assert_eq!(
            c(
                200,
                br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#
            ),
            Some(ErrorClass::ToolError)
        );
        assert_eq!(
            c(400, br#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}"#),
            Some(ErrorClass::SessionLost)
        );
        assert_eq!(c(400, b"bad json"), Some(ErrorClass::JsonRpc));
        // Batches answer as their worst member.
        assert_eq!(c(200, br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#), None);
        assert_eq!(
            c(200, br#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":1}}]"#),
            Some(ErrorClass::JsonRpc)
        );
        assert_eq!(c(200, b"[]"), Some(ErrorClass::NoAnswer));
        // Refused at once on a stream wire: a shed, as a 503 is.
        assert_eq!(
            classify_message(
                br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32029,"message":"shed"}}"#
            ),
            Some(ErrorClass::Shed)
        );
        assert_eq!(
            classify_message(br#"{"jsonrpc":"2.0","id":3,"error":"not an object"}"#),
            Some(ErrorClass::JsonRpc)
        );
        // A notification's empty 202 is fine.
        assert_eq!(classify(202, false, b"", false), None);
        assert!(request_body("tools/call", 7).contains("\"id\":7"));
        let v: serde_json::Value = serde_json::from_str(&initialize_body()).unwrap();
        assert_eq!(v["method"], "initialize");
    }
}
