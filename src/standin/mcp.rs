//! The MCP side of the stand-in, on rmcp (the official Rust SDK): tools `echo` and `work`
//! (CPU work for a given time), two resources, and ping (built in).

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    Implementation, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    schemars, tool, tool_handler, tool_router, ErrorData as McpError, RoleServer, ServerHandler,
};
use serde::Deserialize;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Text to echo back
    pub text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WorkArgs {
    /// Milliseconds of CPU work (at most 1000)
    pub ms: u64,
}

#[derive(Clone)]
pub struct StandInMcp {
    tool_router: ToolRouter<Self>,
}

impl Default for StandInMcp {
    fn default() -> Self {
        Self::new()
    }
}

#[tool_router]
impl StandInMcp {
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Echo back the `text` argument")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Burn `ms` milliseconds of CPU (at most 1000), then return \"done\"")]
    async fn work(&self, Parameters(WorkArgs { ms }): Parameters<WorkArgs>) -> String {
        let until = Instant::now() + Duration::from_millis(ms.min(1000));
        let mut x: u64 = 1;
        while Instant::now() < until {
            for _ in 0..1000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            tokio::task::yield_now().await;
        }
        std::hint::black_box(x);
        "done".to_string()
    }
}

const RESOURCES: &[(&str, &str, &str)] = &[
    ("stand-in://status", "status", "ok"),
    (
        "stand-in://readme",
        "readme",
        "andon stand-in: an erlmcp replica's behaviour, for drills.",
    ),
];

#[tool_handler(router = self.tool_router)]
impl ServerHandler for StandInMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "andon-stand-in",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("Stands in for an erlmcp replica in andon drills.")
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(
            RESOURCES
                .iter()
                .map(|(uri, name, _)| Resource::new(*uri, *name).with_mime_type("text/plain"))
                .collect(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        match RESOURCES.iter().find(|(uri, _, _)| *uri == request.uri) {
            Some((uri, _, text)) => {
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(*text, *uri).with_mime_type("text/plain")
                ])
                .into())
            }
            None => Err(McpError::resource_not_found(
                format!("unknown resource {}", request.uri),
                None,
            )),
        }
    }
}
