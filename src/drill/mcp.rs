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
    /// 503 or 429: refused at once by admission control. Not a failure of the hypothesis
    /// unless the expectations say so: it is load shedding doing its job.
    Shed,
    JsonRpc,
    SessionLost,
    /// The generator could not send on time (too many requests in flight).
    Generator,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Timeout,
        ErrorClass::Refused,
        ErrorClass::Reset,
        ErrorClass::Http5xx,
        ErrorClass::Shed,
        ErrorClass::JsonRpc,
        ErrorClass::SessionLost,
        ErrorClass::Generator,
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

/// Classifies an HTTP answer: `None` is success.
pub fn classify(status: u16, body: &[u8]) -> Option<ErrorClass> {
    match status {
        200..=299 => {
            // A JSON-RPC error object in the JSON body or in an SSE data line.
            let has_error = memchr_find(body, br#""error":"#).is_some()
                && memchr_find(body, br#""result""#).is_none();
            has_error.then_some(ErrorClass::JsonRpc)
        }
        503 | 429 => Some(ErrorClass::Shed),
        404 => Some(ErrorClass::SessionLost),
        500..=599 => Some(ErrorClass::Http5xx),
        _ => Some(ErrorClass::JsonRpc),
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(200, br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            None
        );
        assert_eq!(
            classify(
                200,
                b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
            ),
            None
        );
        assert_eq!(
            classify(200, br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601}}"#),
            Some(ErrorClass::JsonRpc)
        );
        assert_eq!(classify(503, b""), Some(ErrorClass::Shed));
        assert_eq!(classify(404, b""), Some(ErrorClass::SessionLost));
        assert_eq!(classify(502, b""), Some(ErrorClass::Http5xx));
        assert!(request_body("tools/call", 7).contains("\"id\":7"));
        let v: serde_json::Value = serde_json::from_str(&initialize_body()).unwrap();
        assert_eq!(v["method"], "initialize");
    }
}
